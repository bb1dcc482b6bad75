package injector

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// watchBuffer is the capacity of the watcher's event channel.
const watchBuffer = 16

// Bounds of the wait for a watched directory that does not exist (yet, or
// for a moment while a volume is remounted).
const (
	dirRetryMin = 100 * time.Millisecond
	dirRetryMax = 5 * time.Second
)

// FileSource reads a credential from a file, trimmed of surrounding
// whitespace; the value never expires and IssuedAt is the file's
// modification time. Fetch is safe for concurrent use and reads the file
// afresh each time; a missing, empty or over-large (1 MiB) file is an error
// naming the path, never showing content.
//
// FileSource is a Watcher: it notices the file rewritten in place, replaced
// by a rename, and swapped in by a symlink change such as a Kubernetes
// projected volume's "..data" link.
type FileSource struct {
	Path string
}

var _ Watcher = FileSource{}

// Fetch reads the file.
func (s FileSource) Fetch(ctx context.Context) (*Secret, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, mtime, err := readFile(s.Path, maxSecretSize)
	if err != nil {
		return nil, fmt.Errorf("reading credential file: %w", err)
	}
	if len(b) > maxSecretSize {
		return nil, fmt.Errorf("credential file %s is larger than %d bytes", s.Path, maxSecretSize)
	}
	v := strings.TrimSpace(string(b))
	clear(b) // the read buffer: the string is the only copy left
	if v == "" {
		return nil, fmt.Errorf("credential file %s is empty", s.Path)
	}
	return &Secret{Value: v, IssuedAt: mtime}, nil
}

// readFile reads path whole, or its first limit+1 bytes, and returns its
// modification time. A rotating credential file is read at every change,
// so this goes to the descriptor directly: os.Open would offer a regular
// file to the runtime's poller (four fcntl and an epoll_ctl that fails, all
// for nothing), os.NewFile still asks for the flags, and io.ReadAll reads
// once more to see the end. Here a regular file costs open, fstat, one read
// and close: a read that brings the total to the size fstat reported is
// taken as the end. A file rewritten meanwhile is read again at the change
// the watcher reports. Any other file (a pipe, a file under /proc that
// reports size 0) is read until the end.
func readFile(path string, limit int) ([]byte, time.Time, error) {
	fd, err := retryEINTR(func() (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return nil, time.Time{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if _, err := retryEINTR(func() (int, error) { return 0, unix.Fstat(fd, &st) }); err != nil {
		return nil, time.Time{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	size, c := -1, 512 // size unknown: start small
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size > 0 {
		size = int(min(st.Size, int64(limit)+1))
		c = size
	}
	b := make([]byte, 0, c)
	for len(b) <= limit && len(b) != size {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(cap(b), limit+1-len(b)))
		}
		n, err := retryEINTR(func() (int, error) { return unix.Read(fd, b[len(b):min(cap(b), limit+1)]) })
		if err != nil {
			return nil, time.Time{}, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	return b, time.Unix(st.Mtim.Unix()), nil
}

// retryEINTR calls f again while it fails with EINTR.
func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// Watch blocks until ctx is done and then returns nil. It calls changed once
// its watch is in place (so a change just before Watch started is not
// missed) and then whenever the file may have changed; several calls per
// change are usual, the caller coalesces them. changed runs on Watch's
// goroutine and must not block.
//
// Watch watches the file's directory, not the file: a rename over the file
// or a symlink swap replaces the inode a file watch would follow. Events
// for the file's name, and for names beginning with ".." (the projected
// volume's "..data" and timestamped directories) count. When the path is
// a symlink to a file in another directory, that directory is watched too.
//
// A directory that does not exist is waited for, with backoff; one that
// disappears is watched again when it returns, and changed is called then.
// Watch returns an error only when it cannot watch at all (no inotify,
// permission denied, watch limit reached); the caller may call it again.
func (s FileSource) Watch(ctx context.Context, changed func()) error {
	path, err := filepath.Abs(s.Path)
	if err != nil {
		return fmt.Errorf("watching credential file: %w", err)
	}
	// A small buffer lets the reader hand over a rename's burst of events
	// (the temporary file's create, write and rename, then the new name) in
	// one go, instead of a goroutine switch per event.
	w, err := fsnotify.NewBufferedWatcher(watchBuffer)
	if err != nil {
		return fmt.Errorf("watching credential file %s: %w", path, err)
	}
	defer w.Close()
	fw := &fileWatch{w: w, path: path, dir: filepath.Dir(path), changed: changed}
	for {
		if err := fw.addDir(ctx); err != nil || ctx.Err() != nil {
			return err
		}
		fw.follow()
		changed()
		if err := fw.run(ctx); err != nil || ctx.Err() != nil {
			return err
		}
		// The directory went away; the file is gone with it.
		changed()
	}
}

// fileWatch is the state of one FileSource.Watch call; only its goroutine
// touches it.
type fileWatch struct {
	w       *fsnotify.Watcher
	path    string // absolute path of the credential file
	dir     string // its directory, always watched
	target  string // path with symlinks resolved; "" when unresolvable
	tdir    string // target's directory, when watched besides dir
	changed func()
}

// addDir watches the directory, waiting with backoff while it does not
// exist. It returns nil when ctx is done.
func (fw *fileWatch) addDir(ctx context.Context) error {
	wait := dirRetryMin
	for {
		err := fw.w.Add(fw.dir)
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watching directory %s: %w", fw.dir, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, dirRetryMax)
	}
}

// run handles events until ctx is done (nil), the directory's watch is lost
// (nil, ctx still live) or the watcher fails (error).
func (fw *fileWatch) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.w.Events:
			if !ok {
				return errors.New("watching credential file: watcher closed")
			}
			if ev.Name == fw.dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				fw.unfollow()
				return nil
			}
			if fw.relevant(ev.Name) {
				fw.follow()
				fw.changed()
			}
		case err, ok := <-fw.w.Errors:
			if !ok {
				return errors.New("watching credential file: watcher closed")
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				return fmt.Errorf("watching directory %s: %w", fw.dir, err)
			}
			fw.changed() // events were lost; one of them may have mattered
		}
	}
}

// relevant reports whether an event for name may change what path reads.
func (fw *fileWatch) relevant(name string) bool {
	if name == fw.target || name == fw.tdir {
		return true
	}
	dir, base := filepath.Split(name)
	return filepath.Clean(dir) == fw.dir &&
		(base == filepath.Base(fw.path) || strings.HasPrefix(base, ".."))
}

// follow resolves path and, when its target lies in another directory,
// watches that directory too. Failures are not errors: the target may be
// missing for a moment, and the next event resolves again.
func (fw *fileWatch) follow() {
	if fi, err := os.Lstat(fw.path); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
		// A plain file in dir (the usual case, rewritten or renamed over
		// every rotation): nothing to resolve, no other directory to watch.
		// One system call instead of a walk of every path element.
		fw.unfollow()
		fw.target = fw.path
		return
	}
	target, err := filepath.EvalSymlinks(fw.path)
	if err != nil {
		return
	}
	fw.target = target
	tdir := filepath.Dir(target)
	if realDir, err := filepath.EvalSymlinks(fw.dir); err == nil && realDir == tdir {
		tdir = "" // dir itself, already watched
	}
	if tdir == fw.tdir {
		return
	}
	fw.unfollow()
	fw.target = target
	if tdir != "" && fw.w.Add(tdir) == nil {
		fw.tdir = tdir
	}
}

// unfollow drops the watch on the target's directory, if any.
func (fw *fileWatch) unfollow() {
	if fw.tdir != "" {
		_ = fw.w.Remove(fw.tdir) // gone already when the directory was deleted
	}
	fw.tdir, fw.target = "", ""
}
