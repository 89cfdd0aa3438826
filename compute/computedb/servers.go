package computedb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// serverRow is a server. Names are unique within a project.
type serverRow struct {
	ID         string    `gorm:"primaryKey;size:36"`
	Project    string    `gorm:"size:64;not null;uniqueIndex:compute_servers_project_name,priority:1"`
	Name       string    `gorm:"size:63;not null;uniqueIndex:compute_servers_project_name,priority:2;index"`
	Status     string    `gorm:"size:16;not null;index"`
	Task       string    `gorm:"size:16;not null"`
	Power      string    `gorm:"size:16;not null"`
	Host       string    `gorm:"size:64;not null;index"`
	Image      string    `gorm:"size:36;not null;index"`
	ImageName  string    `gorm:"size:63;not null"`
	Flavor     string    `gorm:"not null"` // JSON of compute.ServerFlavor
	FlavorID   string    `gorm:"size:36;not null;index"`
	GroupID    string    `gorm:"size:36;not null;index"`
	Fault      string    `gorm:"not null"`
	CreatedAt  time.Time `gorm:"autoCreateTime:false"`
	UpdatedAt  time.Time `gorm:"autoUpdateTime:false"`
	LaunchedAt *time.Time
	Migration  string `gorm:"not null;default:''"` // JSON of *compute.Migration, "" for none
	Rev        uint64 `gorm:"not null"`
}

func (serverRow) TableName() string { return "compute_servers" }

type groupRow struct {
	ID        string    `gorm:"primaryKey;size:36"`
	Project   string    `gorm:"size:64;not null;uniqueIndex:compute_groups_project_name,priority:1"`
	Name      string    `gorm:"size:63;not null;uniqueIndex:compute_groups_project_name,priority:2"`
	Policy    string    `gorm:"size:32;not null"`
	CreatedAt time.Time `gorm:"autoCreateTime:false"`
}

func (groupRow) TableName() string { return "compute_server_groups" }

func toServer(r serverRow) (compute.Server, error) {
	sv := compute.Server{ID: r.ID, Name: r.Name, Project: r.Project, Status: compute.ServerStatus(r.Status),
		Task: compute.Task(r.Task), Power: compute.State(r.Power), Host: r.Host, Image: r.Image, ImageName: r.ImageName,
		Group: r.GroupID, Fault: r.Fault, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), Rev: r.Rev}
	if r.LaunchedAt != nil {
		t := r.LaunchedAt.UTC()
		sv.LaunchedAt = &t
	}
	if err := json.Unmarshal([]byte(r.Flavor), &sv.Flavor); err != nil {
		return compute.Server{}, fmt.Errorf("computedb: server %s flavor: %w", r.ID, err)
	}
	if r.Migration != "" {
		sv.Migration = &compute.Migration{}
		if err := json.Unmarshal([]byte(r.Migration), sv.Migration); err != nil {
			return compute.Server{}, fmt.Errorf("computedb: server %s migration: %w", r.ID, err)
		}
	}
	return sv, nil
}

func fromServer(sv compute.Server) serverRow {
	fl, _ := json.Marshal(sv.Flavor) // a struct of strings and ints
	var mig []byte
	if sv.Migration != nil {
		mig, _ = json.Marshal(sv.Migration) // strings, numbers and times
	}
	return serverRow{Migration: string(mig), ID: sv.ID, Name: sv.Name, Project: sv.Project, Status: string(sv.Status), Task: string(sv.Task),
		Power: string(sv.Power), Host: sv.Host, Image: sv.Image, ImageName: sv.ImageName, Flavor: string(fl),
		FlavorID: sv.Flavor.ID, GroupID: sv.Group, Fault: sv.Fault, CreatedAt: sv.CreatedAt, UpdatedAt: sv.UpdatedAt,
		LaunchedAt: sv.LaunchedAt, Rev: sv.Rev}
}

// CreateServer records sv (its ID set by the caller: the domain UUID) at
// revision 1.
func (s *Store) CreateServer(ctx context.Context, sv compute.Server) (compute.Server, error) {
	if uuid.Validate(sv.ID) != nil {
		return compute.Server{}, fmt.Errorf("computedb: server id %q is not a UUID", sv.ID)
	}
	sv.CreatedAt = now()
	sv.UpdatedAt, sv.Rev = sv.CreatedAt, 1
	row := fromServer(sv)
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if sqldb.IsUniqueViolation(err) {
			return compute.Server{}, fmt.Errorf("%w: %s in project %s", compute.ErrServerExists, sv.Name, sv.Project)
		}
		return compute.Server{}, fmt.Errorf("computedb: create server: %w", err)
	}
	return sv, nil
}

// Server finds a server by ID, or by name within project (any project
// when project is ""; a name several projects use is then ambiguous and
// reported as not found unless one of them is an exact ID match).
func (s *Store) Server(ctx context.Context, id, project string) (compute.Server, error) {
	db := s.db.WithContext(ctx)
	var rows []serverRow
	q := db.Where("name = ?", id)
	if _, err := uuid.Parse(id); err == nil {
		q = db.Where("id = ? OR name = ?", id, id)
	}
	if err := q.Order("id").Limit(3).Find(&rows).Error; err != nil {
		return compute.Server{}, fmt.Errorf("computedb: server: %w", err)
	}
	var match []serverRow
	for _, r := range rows {
		if r.ID == id {
			if project == "" || r.Project == project {
				return toServer(r)
			}
			continue
		}
		if project == "" || r.Project == project {
			match = append(match, r)
		}
	}
	switch len(match) {
	case 0:
		return compute.Server{}, fmt.Errorf("%w: %s", compute.ErrServerNotFound, id)
	case 1:
		return toServer(match[0])
	}
	return compute.Server{}, errs.Field("server", "name %q is used in several projects: give the ID", id)
}

// Servers lists servers ordered by name then ID, after opts.After (the
// last "name/id" returned), filtered by compute.ServerFilters.
func (s *Store) Servers(ctx context.Context, opts page.Options) ([]compute.Server, string, error) {
	q := s.db.WithContext(ctx).Model(&serverRow{})
	for k, v := range opts.Filters {
		switch k {
		case "status", "host", "project", "image", "name":
			q = q.Where(k+" = ?", v)
		case "flavor":
			q = q.Where("flavor_id = ?", v)
		default:
			return nil, "", errs.Field(k, "unknown filter")
		}
	}
	key := "(name || '/' || id)"
	var rows []serverRow
	if err := sqldb.Page(q, key, opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("computedb: servers: %w", err)
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r serverRow) string { return r.Name + "/" + r.ID })
	out := make([]compute.Server, 0, len(rows))
	for _, r := range rows {
		sv, err := toServer(r)
		if err != nil {
			return nil, "", err
		}
		out = append(out, sv)
	}
	return out, next, nil
}

// AllServers returns every server (a site holds hundreds, not millions).
func (s *Store) AllServers(ctx context.Context) ([]compute.Server, error) {
	var rows []serverRow
	if err := s.db.WithContext(ctx).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("computedb: servers: %w", err)
	}
	out := make([]compute.Server, 0, len(rows))
	for _, r := range rows {
		sv, err := toServer(r)
		if err != nil {
			return nil, err
		}
		out = append(out, sv)
	}
	return out, nil
}

// UpdateServer stores sv if the stored revision is still sv.Rev
// (errs.Conflict otherwise) and the status move is allowed by the state
// machine; it returns sv at its new revision.
func (s *Store) UpdateServer(ctx context.Context, sv compute.Server) (compute.Server, error) {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var cur serverRow
		if err := tx.Where("id = ?", sv.ID).Take(&cur).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("%w: %s", compute.ErrServerNotFound, sv.ID)
			}
			return fmt.Errorf("computedb: update server: %w", err)
		}
		if cur.Rev != sv.Rev {
			return errs.New(errs.Conflict, fmt.Sprintf("server %s changed meanwhile (revision %d, not %d)", sv.Name, cur.Rev, sv.Rev))
		}
		if from := compute.ServerStatus(cur.Status); from != sv.Status && !from.CanTo(sv.Status) {
			return fmt.Errorf("%w: server %s is %s, cannot become %s", compute.ErrServerState, sv.Name, from, sv.Status)
		}
		sv.UpdatedAt, sv.Rev = now(), sv.Rev+1
		sv.CreatedAt = cur.CreatedAt
		row := fromServer(sv)
		res := tx.Model(&serverRow{}).Where("id = ? AND rev = ?", sv.ID, cur.Rev).Select("*").Omit("id", "created_at").Updates(&row)
		if res.Error != nil {
			if sqldb.IsUniqueViolation(res.Error) {
				return fmt.Errorf("%w: %s in project %s", compute.ErrServerExists, sv.Name, sv.Project)
			}
			return fmt.Errorf("computedb: update server: %w", res.Error)
		}
		if res.RowsAffected != 1 {
			return errs.New(errs.Conflict, fmt.Sprintf("server %s changed meanwhile", sv.Name))
		}
		return nil
	})
	if err != nil {
		return compute.Server{}, err
	}
	return sv, nil
}

// DeleteServer removes server id's record; absent is no error.
func (s *Store) DeleteServer(ctx context.Context, id string) error {
	if err := s.db.WithContext(ctx).Where("id = ?", id).Delete(&serverRow{}).Error; err != nil {
		return fmt.Errorf("computedb: delete server: %w", err)
	}
	return nil
}

// ServersUsingImage counts the servers built from image id.
func (s *Store) ServersUsingImage(ctx context.Context, id string) (int, error) {
	var n int64
	if err := s.db.WithContext(ctx).Model(&serverRow{}).Where("image = ?", id).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("computedb: servers by image: %w", err)
	}
	return int(n), nil
}

func (s *Store) toGroup(ctx context.Context, r groupRow) (compute.ServerGroup, error) {
	var ids []string
	if err := s.db.WithContext(ctx).Model(&serverRow{}).Where("group_id = ?", r.ID).Order("id").Pluck("id", &ids).Error; err != nil {
		return compute.ServerGroup{}, fmt.Errorf("computedb: group members: %w", err)
	}
	if ids == nil {
		ids = []string{}
	}
	return compute.ServerGroup{ID: r.ID, Name: r.Name, Policy: compute.ServerGroupPolicy(r.Policy), Project: r.Project,
		Members: ids, CreatedAt: r.CreatedAt.UTC()}, nil
}

// CreateServerGroup records g with a new ID.
func (s *Store) CreateServerGroup(ctx context.Context, g compute.ServerGroup) (compute.ServerGroup, error) {
	row := groupRow{ID: uuid.NewString(), Project: g.Project, Name: g.Name, Policy: string(g.Policy), CreatedAt: now()}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if sqldb.IsUniqueViolation(err) {
			return compute.ServerGroup{}, fmt.Errorf("%w: %s", compute.ErrServerGroupExists, g.Name)
		}
		return compute.ServerGroup{}, fmt.Errorf("computedb: create server group: %w", err)
	}
	return s.toGroup(ctx, row)
}

// ServerGroup finds a group by ID or by name within project ("" = any).
func (s *Store) ServerGroup(ctx context.Context, id, project string) (compute.ServerGroup, error) {
	db := s.db.WithContext(ctx)
	q := db.Where("name = ?", id)
	if _, err := uuid.Parse(id); err == nil {
		q = db.Where("id = ? OR name = ?", id, id)
	}
	if project != "" {
		q = q.Where("project = ?", project)
	}
	var rows []groupRow
	if err := q.Order("id").Limit(2).Find(&rows).Error; err != nil {
		return compute.ServerGroup{}, fmt.Errorf("computedb: server group: %w", err)
	}
	for _, r := range rows {
		if r.ID == id {
			return s.toGroup(ctx, r)
		}
	}
	switch len(rows) {
	case 0:
		return compute.ServerGroup{}, fmt.Errorf("%w: %s", compute.ErrServerGroupNotFound, id)
	case 1:
		return s.toGroup(ctx, rows[0])
	}
	return compute.ServerGroup{}, errs.Field("group", "name %q is used in several projects: give the ID", id)
}

// ServerGroups lists the groups of project ("" = all) by name.
func (s *Store) ServerGroups(ctx context.Context, project string) ([]compute.ServerGroup, error) {
	q := s.db.WithContext(ctx).Order("name, id")
	if project != "" {
		q = q.Where("project = ?", project)
	}
	var rows []groupRow
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("computedb: server groups: %w", err)
	}
	out := make([]compute.ServerGroup, 0, len(rows))
	for _, r := range rows {
		g, err := s.toGroup(ctx, r)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// DeleteServerGroup removes an empty group (ErrServerGroupInUse if it
// has members).
func (s *Store) DeleteServerGroup(ctx context.Context, id string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&serverRow{}).Where("group_id = ?", id).Count(&n).Error; err != nil {
			return fmt.Errorf("computedb: delete server group: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("%w: %d servers", compute.ErrServerGroupInUse, n)
		}
		res := tx.Where("id = ?", id).Delete(&groupRow{})
		if res.Error != nil {
			return fmt.Errorf("computedb: delete server group: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("%w: %s", compute.ErrServerGroupNotFound, id)
		}
		return nil
	})
}
