package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/sidekey/sidekey/config"
)

// listen binds a listen address: host:port over TCP, or unix:PATH, a unix
// socket that only this user can connect to.
func listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, config.UnixPrefix)
	if !ok {
		return net.Listen("tcp", addr)
	}
	return listenUnix(path)
}

// listenUnix binds a unix socket at path, mode 0600 whatever the umask: the
// socket is bound under a umask that leaves nothing for group and others,
// so there is no moment at which another user could connect, then chmod'ed
// in case the file system ignored the umask. A stale socket (its server
// gone: connecting is refused) is replaced; a live one, or a file that is
// not a socket, is an error. Closing the listener removes the file.
func listenUnix(path string) (net.Listener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// removeStale removes a socket file left behind by a server that is gone.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another server is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Remove(path)
}
