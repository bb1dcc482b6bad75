//go:build unix

package injector

import (
	"os"
	"syscall"
)

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
