// Package linelog captures a child process's output as lines for the
// end-to-end tests, and lets a test wait for the next line instead of
// sleeping. It is shared by every e2e package.
package linelog

import (
	"bytes"
	"sync"
)

// Log is an io.Writer that splits what it gets into lines and wakes up
// waiters on every new line.
type Log struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	notify  chan struct{}
}

// New returns an empty Log.
func New() *Log { return &Log{notify: make(chan struct{})} }

// Write implements io.Writer; it never fails.
func (l *Log) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		l.partial = append([]byte(nil), l.partial...)
		close(l.notify)
		l.notify = make(chan struct{})
	}
	return len(b), nil
}

// Flush turns a trailing partial line into a line.
func (l *Log) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.lines = append(l.lines, string(l.partial))
		l.partial = nil
	}
	close(l.notify)
	l.notify = make(chan struct{})
}

// All returns every complete line so far.
func (l *Log) All() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Since returns the lines from index i on and a channel closed on the next
// new line.
func (l *Log) Since(i int) ([]string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i > len(l.lines) {
		i = len(l.lines)
	}
	return append([]string(nil), l.lines[i:]...), l.notify
}
