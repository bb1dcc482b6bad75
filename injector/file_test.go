package injector

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// watchDeadline bounds every wait for a watch signal.
const watchDeadline = 5 * time.Second

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceFetch(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "plain"), "tok-123")
	writeFile(t, filepath.Join(dir, "spaced"), "\n  tok-456 \n\n")
	writeFile(t, filepath.Join(dir, "blank"), " \n\t")
	writeFile(t, filepath.Join(dir, "limit"), strings.Repeat("a", maxSecretSize))
	writeFile(t, filepath.Join(dir, "huge"), strings.Repeat("a", maxSecretSize+1))

	tests := []struct {
		name    string
		want    string
		wantErr string
	}{
		{"plain", "tok-123", ""},
		{"spaced", "tok-456", ""},
		{"limit", strings.Repeat("a", maxSecretSize), ""},
		{"blank", "", "is empty"},
		{"huge", "", "is larger than"},
		{"missing", "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			s, err := FileSource{Path: path}.Fetch(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("Fetch error = %v, want one naming %s and containing %q", err, path, tt.wantErr)
				}
				if strings.Contains(err.Error(), "aaaa") {
					t.Errorf("error shows file content: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if s.Value != tt.want {
				t.Errorf("Value = %.20q, want %.20q", s.Value, tt.want)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if !s.IssuedAt.Equal(fi.ModTime()) || !s.ExpiresAt.IsZero() {
				t.Errorf("IssuedAt, ExpiresAt = %v, %v; want mtime %v, zero", s.IssuedAt, s.ExpiresAt, fi.ModTime())
			}
		})
	}
}

// A file whose size fstat does not give (a pipe, much of /proc) is read
// until its end, not up to the size; this one is longer than the first
// buffer.
func TestFileSourceFetchUnsizedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Skipf("no named pipe here: %v", err)
	}
	want := strings.Repeat("t", 3000)
	wrote := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0) // waits for the reader
		if err == nil {
			_, err = f.WriteString(want + "\n")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		wrote <- err
	}()
	s, err := FileSource{Path: path}.Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if s.Value != want {
		t.Errorf("Fetch read %d bytes, want %d", len(s.Value), len(want))
	}
}

// BenchmarkFileSourceFetch is the read behind every rotation of a file
// credential.
func BenchmarkFileSourceFetch(b *testing.B) {
	path := filepath.Join(b.TempDir(), "token")
	writeFile(b, path, "tok-0123456789abcdef0123456789abcdef\n")
	s := FileSource{Path: path}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Fetch(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFileSourceFetchMissingIsNotExist(t *testing.T) {
	_, err := FileSource{Path: filepath.Join(t.TempDir(), "nope")}.Fetch(context.Background())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Fetch error = %v, want fs.ErrNotExist", err)
	}
}

// startWatch runs FileSource{path}.Watch until the test ends and returns
// the channel its changed calls signal on.
func startWatch(t *testing.T, path string) <-chan struct{} {
	t.Helper()
	ch := make(chan struct{}, 1)
	changed := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- FileSource{Path: path}.Watch(ctx, changed) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v after cancel, want nil", err)
		}
	})
	return ch
}

// awaitSignal waits for one changed signal.
func awaitSignal(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(watchDeadline):
		t.Fatalf("no change signalled within %s", watchDeadline)
	}
}

// awaitValue waits for changed signals until Fetch returns want.
func awaitValue(t *testing.T, ch <-chan struct{}, path, want string) {
	t.Helper()
	deadline := time.After(watchDeadline)
	var last string
	for {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("Fetch did not return %q within %s of the change; last: %s", want, watchDeadline, last)
		}
		s, err := FileSource{Path: path}.Fetch(context.Background())
		if err == nil && s.Value == want {
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("value %q", s.Value)
		}
	}
}

func TestFileSourceWatchInPlaceWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "one")
	ch := startWatch(t, path)
	awaitSignal(t, ch) // the watch is in place

	writeFile(t, path, "two")
	awaitValue(t, ch, path, "two")
}

func TestFileSourceWatchRenameOver(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	writeFile(t, path, "one")
	ch := startWatch(t, path)
	awaitSignal(t, ch)

	for _, v := range []string{"two", "three"} {
		tmp := filepath.Join(dir, "token.tmp")
		writeFile(t, tmp, v)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		awaitValue(t, ch, path, v)
	}
}

// kubeletUpdate swaps a projected volume's content the way kubelet's
// atomic writer does: a new timestamped directory, a "..data_tmp" symlink
// to it renamed over "..data", then the old directory removed.
func kubeletUpdate(t *testing.T, dir, oldTS, newTS, value string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, newTS), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, newTS, "token"), value)
	if err := os.Symlink(newTS, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, oldTS)); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceWatchKubernetesSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "..2026_a"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "..2026_a", "token"), "one")
	if err := os.Symlink("..2026_a", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "token")
	if err := os.Symlink(filepath.Join("..data", "token"), path); err != nil {
		t.Fatal(err)
	}
	ch := startWatch(t, path)
	awaitSignal(t, ch)

	kubeletUpdate(t, dir, "..2026_a", "..2026_b", "two")
	awaitValue(t, ch, path, "two")
	// The directory the link first resolved to is gone; the watch goes on.
	kubeletUpdate(t, dir, "..2026_b", "..2026_c", "three")
	awaitValue(t, ch, path, "three")
}

func TestFileSourceWatchSymlinkToOtherDirectory(t *testing.T) {
	linkDir, targetDir := t.TempDir(), t.TempDir()
	target := filepath.Join(targetDir, "real-token")
	writeFile(t, target, "one")
	path := filepath.Join(linkDir, "token")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	ch := startWatch(t, path)
	awaitSignal(t, ch)

	writeFile(t, target, "two") // in place, in the target's directory only
	awaitValue(t, ch, path, "two")
}

func TestFileSourceWatchDirectoryAppears(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "token")
	ch := startWatch(t, path)

	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "one")
	awaitValue(t, ch, path, "one")
}

func TestFileSourceWatchDirectoryReplaced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "token")
	writeFile(t, path, "one")
	ch := startWatch(t, path)
	awaitSignal(t, ch)

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "two")
	awaitValue(t, ch, path, "two")

	writeFile(t, path, "three") // the new directory is watched
	awaitValue(t, ch, path, "three")
}

func TestFileSourceWatchStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := FileSource{Path: filepath.Join(t.TempDir(), "token")}.Watch(ctx, func() {})
	if err != nil {
		t.Errorf("Watch with a done context = %v, want nil", err)
	}
}
