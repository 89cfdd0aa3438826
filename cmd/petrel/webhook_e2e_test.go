package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/faultmgr/webhook"
	"github.com/petrel-edge/petrel/lab"
)

// TestWebhookThroughTheCLI runs a site controller from a config file and
// drives webhooks with the CLI against a local receiver.
func TestWebhookThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	cfgFile := filepath.Join(dir, "site.yaml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("site: site-wh\nshape: simplex\nlisten: 127.0.0.1:%d\ndata_dir: %s\n"+
		"webhooks:\n  deny: [10.255.0.0/16]\n", port, dir)), 0o600)
	daemon := exec.Command(petrelBin, "subcloud", "--config", cfgFile)
	var logs syncBuf
	daemon.Stderr = &logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- daemon.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			daemon.Process.Kill()
			<-done
		}
	})
	alive := func() bool {
		select {
		case err := <-done:
			done <- err
			return false
		default:
			return true
		}
	}
	url, ca := fmt.Sprintf("https://127.0.0.1:%d", port), filepath.Join(dir, "pki", "ca.crt")
	if err := waitForFile(ca); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitReady(t.Context(), url, ca, 20*time.Second, alive); err != nil {
		t.Fatalf("site not ready: %v\n%s", err, logs.String())
	}
	c := cli{t: t, env: []string{"PETREL_URL=" + url, "PETREL_CA_CERT=" + ca, "PETREL_CONFIG_DIR=" + t.TempDir()}}
	c.ok("login", "--password-file", filepath.Join(dir, "admin.password"))

	var mu sync.Mutex
	var secret string
	var got []webhook.Delivery
	var bad []error
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err := webhook.Verify(secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
			bad = append(bad, err)
		}
		var d webhook.Delivery
		json.Unmarshal(body, &d)
		got = append(got, d)
	}))
	t.Cleanup(rcv.Close)

	out, errOut, code := c.run("", "webhook", "create", rcv.URL+"/hook", "--filter", "severity=critical", "--filter", "alarm_id=200.",
		"--description", "e2e receiver")
	if code != 0 {
		t.Fatalf("webhook create: exit %d\n%s%s", code, out, errOut)
	}
	mu.Lock()
	secret = strings.TrimSpace(out)
	mu.Unlock()
	if !strings.HasPrefix(secret, webhook.SecretPrefix) || strings.Count(out, "\n") != 1 || !strings.Contains(errOut, "shown only now") {
		t.Errorf("create printed %q on stdout and %q on stderr; want the secret alone, and what it is on stderr", out, errOut)
	}
	var list struct{ Items []webhook.Webhook }
	listJSON := c.ok("webhook", "list", "-o", "json")
	if err := json.Unmarshal([]byte(listJSON), &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("webhook list -o json = %s, %v", listJSON, err)
	}
	id := list.Items[0].ID
	shown := c.ok("webhook", "show", id, "-o", "yaml") + c.ok("webhook", "show", id) + c.ok("webhook", "list") + listJSON
	if strings.Contains(shown, secret) || !strings.Contains(shown, "e2e receiver") {
		t.Errorf("list/show output holds the secret or lacks the webhook:\n%s", shown)
	}

	c.ok("alarm", "raise", "200.010", "host=worker-1") // major: filtered out
	c.ok("alarm", "raise", "200.004", "host=worker-1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n, first := len(got), webhook.Delivery{}
		if n > 0 {
			first = got[0]
		}
		mu.Unlock()
		if n == 1 && first.Event != nil && first.Event.AlarmID == "200.004" && first.Event.Site == "site-wh" {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("deliveries = %+v; want the 200.004 set", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.ok("webhook", "test", id)
	c.ok("webhook", "disable", id)
	if out := c.ok("webhook", "show", id, "-o", "json"); !strings.Contains(out, `"state": "disabled"`) {
		t.Errorf("show after disable:\n%s", out)
	}
	c.ok("webhook", "update", id, "--type", "set,clear,log")
	c.ok("webhook", "enable", id)

	// Refusals: a denied target (exit 1, naming why), a bad flag (exit 2).
	if msg := c.exit(1, "webhook", "create", "http://169.254.169.254/latest/meta-data/"); !strings.Contains(msg, "not allowed") {
		t.Errorf("create for the metadata address said %q", msg)
	}
	if msg := c.exit(1, "webhook", "create", "http://10.255.1.1/"); !strings.Contains(msg, "10.255.0.0/16") {
		t.Errorf("create for a configured denied range said %q", msg)
	}
	c.exit(2, "webhook", "create", rcv.URL, "--filter", "colour=red")
	c.exit(2, "webhook", "create")
	c.ok("webhook", "delete", id)
	if out := c.ok("webhook", "list"); strings.Contains(out, id) {
		t.Errorf("list after delete:\n%s", out)
	}
	mu.Lock()
	if len(bad) > 0 {
		t.Errorf("deliveries that did not verify: %v", bad)
	}
	mu.Unlock()
	if strings.Contains(logs.String(), secret) {
		t.Error("the daemon's log holds the webhook secret")
	}

	daemon.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("site controller after SIGTERM: %v; want exit 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("site controller still running 15 s after SIGTERM")
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
