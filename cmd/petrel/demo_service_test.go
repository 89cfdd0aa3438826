package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/servicemgr"
)

// TestDemoServiceStopsOnSIGTERM runs `petrel demo-service`, checks it
// answers its role and stops within 2 s of SIGTERM with exit 0, every log
// line slog JSON.
func TestDemoServiceStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	b, _ := json.Marshal(servicemgr.RoleFile{Host: "h1", Group: "g", Role: servicemgr.RoleActive, Epoch: 4})
	os.WriteFile(filepath.Join(dir, "role.json"), b, 0o644)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var logs bytes.Buffer
	cmd := exec.Command(petrelBin, "demo-service", "--listen", addr, "--state-dir", dir)
	cmd.Env = []string{"PETREL_HOST=h1", "PETREL_GROUP=g"}
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})

	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	var body []byte
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := hc.Get("http://" + addr + "/")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET / = %d %s; want 200", resp.StatusCode, body)
			}
			break
		}
		select {
		case err := <-done:
			t.Fatalf("demo-service exited: %v; log:\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo-service not answering after 20 s: %v", err)
		}
	}
	var rf servicemgr.RoleFile
	if err := json.Unmarshal(body, &rf); err != nil || rf.Host != "h1" || rf.Role != servicemgr.RoleActive || rf.Epoch != 4 {
		t.Errorf("GET / body = %s; want h1 active epoch 4", body)
	}

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo-service after SIGTERM: %v; want exit 0", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("demo-service took %s to stop; want at most 2 s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("demo-service still running 5 s after SIGTERM")
	}
	sc := bufio.NewScanner(bytes.NewReader(logs.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m["level"] == nil || m["msg"] == nil {
			t.Errorf("log line is not slog JSON: %s", sc.Text())
		}
	}
}
