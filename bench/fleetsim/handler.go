package fleetsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/rest"
)

// What central's sync engine calls at a site (central/sync_relay.go,
// sync_images.go, sync_users.go), answered from memory in the shapes the
// real site serves (subcloud/osapi, auth/sync.go). Every call must carry
// central's relay assertion for this site: it is verified as a site does.

type flavor struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	RAM      int    `json:"ram"`
	VCPUs    int    `json:"vcpus"`
	Disk     int    `json:"disk"`
	IsPublic bool   `json:"os-flavor-access:is_public"`
}

type image struct {
	ID, Name, Status, DiskFormat, Visibility, Owner, Checksum string
	Created                                                   time.Time
}

const glanceTime = "2006-01-02T15:04:05Z"

func (im image) view() map[string]any {
	return map[string]any{"id": im.ID, "name": im.Name, "status": im.Status, "visibility": im.Visibility,
		"owner": im.Owner, "protected": false, "os_hidden": false, "checksum": nil, "os_hash_algo": "sha256",
		"os_hash_value": im.Checksum, "size": 0, "virtual_size": nil, "min_ram": 0, "min_disk": 0,
		"disk_format": im.DiskFormat, "container_format": "bare", "tags": []string{},
		"created_at": im.Created.Format(glanceTime), "updated_at": im.Created.Format(glanceTime),
		"self": "/v2/images/" + im.ID, "file": "/v2/images/" + im.ID + "/file", "schema": "/v2/schemas/image"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func fail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, rest.ErrorBody{Error: rest.ErrorDetail{Code: http.StatusText(status), Message: msg}})
}

// maxBody bounds a relayed request's body (a simulated patch archive is
// a few KiB).
const maxBody = 4 << 20

// handler answers central's relayed calls to this site.
func (st *site) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := st.sim.cfg.Delay; d > 0 {
			time.Sleep(2 * d) // the request's and the answer's way
		}
		if _, err := st.verif.Verify(r.Header.Get(auth.AssertionHeader), r.Method, r.URL.EscapedPath()); err != nil {
			fail(w, http.StatusUnauthorized, err.Error())
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			fail(w, http.StatusBadRequest, err.Error())
			return
		}
		p := r.URL.Path
		switch {
		case strings.HasPrefix(p, "/compute/v2.1/flavors"):
			st.flavorsAPI(w, r, strings.TrimPrefix(p, "/compute/v2.1/flavors"), body)
		case strings.HasPrefix(p, "/image/v2/images"):
			st.imagesAPI(w, r, strings.TrimPrefix(p, "/image/v2/images"), body)
		case p == "/v1/patches" || strings.HasPrefix(p, "/v1/patches/"):
			st.patchesAPI(w, r, strings.TrimPrefix(p, "/v1/patches"), body)
		case p == "/v1/strategies/patch" || p == "/v1/strategies/patch/actions":
			st.strategyAPI(w, r, strings.TrimPrefix(p, "/v1/strategies/patch"), body)
		case strings.HasPrefix(p, "/v1/sync/"):
			st.syncAPI(w, r, strings.TrimPrefix(p, "/v1/sync/"), body)
		default:
			fail(w, http.StatusNotFound, "not simulated: "+p)
		}
	})
}

func (st *site) flavorsAPI(w http.ResponseWriter, r *http.Request, rest string, body []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && (rest == "/detail" || rest == ""):
		out := make([]flavor, 0, len(st.flavors))
		for _, f := range st.flavors {
			out = append(out, f)
		}
		slices.SortFunc(out, func(a, b flavor) int { return strings.Compare(a.Name, b.Name) })
		writeJSON(w, http.StatusOK, map[string]any{"flavors": out})
	case r.Method == http.MethodGet:
		f, ok := st.flavors[strings.TrimPrefix(rest, "/")]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]any{"itemNotFound": map[string]any{"code": 404, "message": "flavor not found"}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"flavor": f})
	case r.Method == http.MethodPost && rest == "":
		var req struct {
			Flavor flavor `json:"flavor"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.Flavor.ID == "" || req.Flavor.Name == "" {
			fail(w, http.StatusBadRequest, "bad flavor")
			return
		}
		f := req.Flavor
		for _, have := range st.flavors {
			if have.ID == f.ID || have.Name == f.Name {
				writeJSON(w, http.StatusConflict, map[string]any{"conflictingRequest": map[string]any{"code": 409, "message": "flavor exists"}})
				return
			}
		}
		st.flavors[f.ID] = f
		if _, ok := st.flavorAt[f.ID]; !ok {
			st.flavorAt[f.ID] = time.Now()
		}
		writeJSON(w, http.StatusOK, map[string]any{"flavor": f})
	case r.Method == http.MethodDelete:
		id := strings.TrimPrefix(rest, "/")
		if _, ok := st.flavors[id]; !ok {
			writeJSON(w, http.StatusNotFound, map[string]any{"itemNotFound": map[string]any{"code": 404, "message": "flavor not found"}})
			return
		}
		delete(st.flavors, id)
		w.WriteHeader(http.StatusAccepted)
	default:
		fail(w, http.StatusMethodNotAllowed, r.Method)
	}
}

func (st *site) imagesAPI(w http.ResponseWriter, r *http.Request, rest string, body []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	id, action, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	switch {
	case r.Method == http.MethodGet && id == "":
		out := make([]map[string]any, 0, len(st.images))
		for _, im := range st.images {
			out = append(out, im.view())
		}
		writeJSON(w, http.StatusOK, map[string]any{"images": out, "schema": "/v2/schemas/images", "first": "/v2/images"})
	case r.Method == http.MethodGet:
		im, ok := st.images[id]
		if !ok {
			fail(w, http.StatusNotFound, "image not found")
			return
		}
		writeJSON(w, http.StatusOK, im.view())
	case r.Method == http.MethodPost && id == "":
		var req struct {
			ID, Name   string
			DiskFormat string `json:"disk_format"`
			Visibility string `json:"visibility"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.ID == "" {
			fail(w, http.StatusBadRequest, "bad image")
			return
		}
		for _, have := range st.images {
			if have.ID == req.ID || have.Name == req.Name {
				fail(w, http.StatusConflict, "image exists")
				return
			}
		}
		if req.Visibility == "" {
			req.Visibility = "private"
		}
		im := image{ID: req.ID, Name: req.Name, Status: "queued", DiskFormat: req.DiskFormat, Visibility: req.Visibility,
			Owner: "admin", Created: time.Now().UTC()}
		st.images[im.ID] = im
		writeJSON(w, http.StatusCreated, im.view())
	case r.Method == http.MethodPost && action == "import":
		im, ok := st.images[id]
		if !ok {
			fail(w, http.StatusNotFound, "image not found")
			return
		}
		var req struct {
			Method struct{ Name, URI string } `json:"method"`
		}
		_ = json.Unmarshal(body, &req)
		sum := req.Method.URI[strings.LastIndexByte(req.Method.URI, '/')+1:]
		// A site that already holds these bytes: active at once.
		im.Status, im.Checksum = "active", sum
		st.images[id] = im
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodDelete && id != "":
		if _, ok := st.images[id]; !ok {
			fail(w, http.StatusNotFound, "image not found")
			return
		}
		delete(st.images, id)
		w.WriteHeader(http.StatusNoContent)
	default:
		fail(w, http.StatusMethodNotAllowed, r.Method)
	}
}

func (st *site) syncAPI(w http.ResponseWriter, r *http.Request, rest string, body []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	kind, esc, _ := strings.Cut(rest, "/")
	name, _ := url.PathUnescape(esc)
	switch {
	case kind == "projects" && r.Method == http.MethodGet && name == "":
		items := []auth.Project{}
		for n, d := range st.projects {
			items = append(items, auth.Project{Name: n, Description: d})
		}
		writeJSON(w, http.StatusOK, map[string]any{"items": items})
	case kind == "projects" && r.Method == http.MethodPut && name != "":
		var req auth.SyncProjectRequest
		if err := json.Unmarshal(body, &req); err != nil {
			fail(w, http.StatusBadRequest, "bad project")
			return
		}
		st.projects[name] = req.Description
		writeJSON(w, http.StatusOK, auth.Project{Name: name, Description: req.Description})
	case kind == "projects" && r.Method == http.MethodDelete && name != "":
		if _, ok := st.projects[name]; !ok {
			fail(w, http.StatusNotFound, "no such project")
			return
		}
		delete(st.projects, name)
		w.WriteHeader(http.StatusNoContent)
	case kind == "users" && r.Method == http.MethodGet && name == "":
		items := []auth.SyncedUserView{}
		for _, u := range st.users {
			items = append(items, u)
		}
		writeJSON(w, http.StatusOK, map[string]any{"items": items})
	case kind == "users" && r.Method == http.MethodPut && name != "":
		var req auth.SyncUserRequest
		if err := json.Unmarshal(body, &req); err != nil {
			fail(w, http.StatusBadRequest, "bad user")
			return
		}
		u := auth.SyncedUserView{Name: name, Role: req.Role, Project: req.Project, PasswordSHA256: auth.HashDigest(req.PasswordHash)}
		st.users[name] = u
		writeJSON(w, http.StatusOK, u)
	case kind == "users" && r.Method == http.MethodDelete && name != "":
		if _, ok := st.users[name]; !ok {
			fail(w, http.StatusNotFound, "no such user")
			return
		}
		delete(st.users, name)
		w.WriteHeader(http.StatusNoContent)
	default:
		fail(w, http.StatusNotFound, "not simulated: /v1/sync/"+rest)
	}
}
