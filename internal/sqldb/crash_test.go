package sqldb_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/petrel-edge/petrel/internal/sqldb"
)

type ackRow struct {
	ID      int `gorm:"primaryKey"`
	Payload string
}

// TestMain lets the test binary act as the crash test's writer process.
func TestMain(m *testing.M) {
	if path := os.Getenv("PETREL_CRASH_WRITER"); path != "" {
		crashWriter(path)
		return
	}
	os.Exit(m.Run())
}

// crashWriter commits rows one transaction at a time and prints each id
// after its commit returned: a printed id is an acknowledged write.
func crashWriter(path string) {
	db, err := sqldb.Open(context.Background(), path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := db.AutoMigrate(&ackRow{}); err != nil {
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 1; ; i++ {
		if err := db.Create(&ackRow{ID: i, Payload: fmt.Sprintf("row-%d-%0100d", i, i)}).Error; err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(w, i)
		w.Flush()
	}
}

// TestSIGKILLLosesNoAcknowledgedWrite kills a writer mid-stream and checks
// every acknowledged row is there after reopening, and the file is sound.
// (A process kill cannot test fsync: the page cache survives it. Power-loss
// durability rests on the settings TestConformanceDurability asserts.)
func TestSIGKILLLosesNoAcknowledgedWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crash.db")
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "PETREL_CRASH_WRITER="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		acked := 0
		target := 200 + round*37
		for sc.Scan() {
			acked, _ = strconv.Atoi(sc.Text())
			if acked >= target {
				break
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if acked < target {
			t.Fatalf("round %d: writer acknowledged only %d rows before dying", round, acked)
		}
		db, err := sqldb.Open(context.Background(), path)
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		var check string
		if err := db.Raw("PRAGMA integrity_check").Scan(&check).Error; err != nil || check != "ok" {
			t.Errorf("round %d: integrity_check = %q, %v", round, check, err)
		}
		var missing int64
		if err := db.Model(&ackRow{}).Where("id <= ?", acked).Count(&missing).Error; err != nil {
			t.Fatal(err)
		}
		if int(missing) < acked {
			t.Errorf("round %d: %d of %d acknowledged rows survive SIGKILL", round, missing, acked)
		}
		// Each round starts from id 1 again.
		db.Exec("DELETE FROM ack_rows")
		db.Close()
	}
}
