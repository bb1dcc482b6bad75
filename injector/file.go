package injector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
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
	f, err := openFile(s.Path)
	if err != nil {
		return nil, fmt.Errorf("reading credential file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading credential file: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading credential file: %w", err)
	}
	if len(b) > maxSecretSize {
		return nil, fmt.Errorf("credential file %s is larger than %d bytes", s.Path, maxSecretSize)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return nil, fmt.Errorf("credential file %s is empty", s.Path)
	}
	return &Secret{Value: v, IssuedAt: fi.ModTime()}, nil
}

// openFile opens path for reading without offering it to the runtime's
// poller. os.Open does offer it, and for a regular file that costs five
// system calls for nothing: two fcntl to make it non-blocking, an epoll_ctl
// that fails, two more fcntl to undo it. A rotating credential file is read
// at every change, so on a file rotated every few milliseconds those are
// half of the system calls of each rotation's read.
func openFile(path string) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
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
