package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sidekey/sidekey/config"
)

const scanUsage = `usage: sidekey scan [-v] PATH...
       sidekey scan [-v] --staged

Reports strings shaped like credentials (PEM private keys, GitHub, AWS,
Slack, sk- and Stripe keys, JWTs), one FILE:LINE: kind line each, never the
value. Exit 0 when clean, 1 on a find or on a file that could not be read
(said on stderr), 2 on a usage error.

Folders are walked depth first in name order. Passed over: .git, .hg, .svn,
.bzr and .jj folders; symbolic links met inside a folder (a PATH that is one
is followed); anything but regular files; binary files (a NUL byte in the
first 8000 bytes, as git judges) and files over 10 MiB. -v names each on
stderr.

A line that contains ` + config.AllowSecret + ` is not reported: put it in a
comment on a deliberate test fixture's line.

--staged scans what the index holds for the files staged for commit, not the
working tree, with paths relative to the repository's top. As a pre-commit
hook:

  printf '#!/bin/sh\nexec sidekey scan --staged\n' > .git/hooks/pre-commit
  chmod +x .git/hooks/pre-commit

flags:
  --staged   scan the files staged for commit in the current repository
  -v         name on stderr each file passed over, and why
`

// What scan reads: text as git judges it, and files of a sane size.
const (
	scanMaxSize = 10 << 20
	scanSniff   = 8000 // git's FIRST_FEW_BYTES
)

var errScanUsage = errors.New("usage")

type scanOptions struct {
	staged, verbose bool
	paths           []string
}

// cmdScan reports the credential-shaped strings in files, folders or the
// git index.
func cmdScan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := scanFlags(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, scanUsage)
		return exitOK
	case err != nil:
		fmt.Fprintln(stderr, "usage: sidekey scan [-v] PATH... | --staged   (sidekey scan -h for more)")
		return exitUsage
	}
	s := &scanner{stdout: stdout, stderr: stderr, verbose: opts.verbose}
	if opts.staged {
		s.staged(ctx)
	}
	for _, p := range opts.paths {
		s.path(p)
	}
	if s.found || s.failed {
		return exitFailed
	}
	return exitOK
}

// scanFlags parses the flags, before or after the paths; "--" ends them.
// Exactly one of PATH... and --staged is required.
func scanFlags(args []string, stderr io.Writer) (scanOptions, error) {
	var o scanOptions
	fs := flag.NewFlagSet("sidekey scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	fs.BoolVar(&o.staged, "staged", false, "scan the files staged for commit")
	fs.BoolVar(&o.verbose, "v", false, "name the files passed over")
	for {
		if err := fs.Parse(args); err != nil {
			return o, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			o.paths = append(o.paths, rest...)
			break
		}
		o.paths, args = append(o.paths, rest[0]), rest[1:]
	}
	if o.staged == (len(o.paths) > 0) {
		return o, errScanUsage
	}
	return o, nil
}

// scanner prints one FILE:LINE: kind line per find on stdout, and on stderr
// what it could not read (and, verbose, what it passed over). It never
// prints a value. One scanner serves one run from one goroutine.
type scanner struct {
	stdout, stderr io.Writer
	verbose        bool
	found, failed  bool
}

// path scans one PATH argument. A symbolic link there is followed: the
// user named it.
func (s *scanner) path(name string) {
	fi, err := os.Stat(name)
	switch {
	case err != nil:
		s.fail(err)
	case fi.IsDir():
		s.dir(name)
	case fi.Mode().IsRegular():
		s.file(name)
	default:
		s.skip(name, "not a regular file")
	}
}

// dir walks a folder depth first in name order. It passes over version
// control folders, and symbolic links to files and folders alike: git
// records a link, not what it points at; a target inside the tree is
// scanned under its own name, and one outside is not the tree's.
func (s *scanner) dir(name string) {
	entries, err := os.ReadDir(name)
	if err != nil {
		s.fail(err) // and scan the entries read before it
	}
	for _, e := range entries {
		p := filepath.Join(name, e.Name())
		switch t := e.Type(); {
		case t.IsDir() && isVCSDir(e.Name()):
			s.skip(p, "version control folder")
		case t.IsDir():
			s.dir(p)
		case t.IsRegular():
			s.file(p)
		case t&os.ModeSymlink != 0:
			s.skip(p, "symbolic link")
		default:
			s.skip(p, "not a regular file")
		}
	}
}

func isVCSDir(name string) bool {
	switch name {
	case ".git", ".hg", ".svn", ".bzr", ".jj":
		return true
	}
	return false
}

func (s *scanner) file(name string) {
	f, err := os.Open(name)
	if err != nil {
		s.fail(err)
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > scanMaxSize {
		s.skip(name, "larger than 10 MiB")
		return
	}
	data, err := io.ReadAll(io.LimitReader(f, scanMaxSize+1))
	if err != nil {
		s.fail(err)
		return
	}
	s.data(name, data)
}

// data reports the finds in one file's content under name.
func (s *scanner) data(name string, data []byte) {
	switch {
	case len(data) > scanMaxSize:
		s.skip(name, "larger than 10 MiB")
		return
	case bytes.IndexByte(data[:min(len(data), scanSniff)], 0) >= 0:
		s.skip(name, "binary")
		return
	}
	for _, f := range config.Scan(data) {
		s.found = true
		fmt.Fprintf(s.stdout, "%s:%d: %s\n", name, f.Line, f.Kind)
	}
}

func (s *scanner) skip(name, why string) {
	if s.verbose {
		fmt.Fprintf(s.stderr, "sidekey scan: %s: passed over: %s\n", name, why)
	}
}

func (s *scanner) fail(err error) {
	s.failed = true
	fmt.Fprintf(s.stderr, "sidekey scan: %v\n", err)
}

// stagedFile is one file of the index that the next commit adds or changes.
type stagedFile struct{ mode, blob, path string }

// staged scans the blobs the index holds for the files staged as added,
// copied, modified or renamed: what the next commit will hold, whatever the
// working tree says. git runs in the current directory with this process's
// environment, so a hook's GIT_DIR and GIT_INDEX_FILE (the temporary index
// of `git commit -a` or `git commit PATH`) are honoured. Paths are git's,
// relative to the top of the work tree.
func (s *scanner) staged(ctx context.Context) {
	// Outside a repository git diff would compare files instead, --no-index.
	if _, err := exec.CommandContext(ctx, "git", "rev-parse", "--git-dir").Output(); err != nil {
		s.fail(gitError("git rev-parse", err))
		return
	}
	out, err := exec.CommandContext(ctx, "git", "diff", "--cached", "--raw", "-z", "--no-abbrev", "--diff-filter=ACMR").Output()
	if err != nil {
		s.fail(gitError("git diff --cached", err))
		return
	}
	files, err := parseRawDiff(out)
	if err != nil {
		s.fail(err)
		return
	}
	var blobs []stagedFile
	var in bytes.Buffer
	for _, f := range files {
		switch {
		case strings.HasPrefix(f.mode, "100"): // 100644, 100755
			blobs = append(blobs, f)
			fmt.Fprintln(&in, f.blob)
		case f.mode == "120000":
			s.skip(f.path, "symbolic link")
		default: // 160000, a submodule's commit
			s.skip(f.path, "not a regular file")
		}
	}
	if len(blobs) > 0 {
		if err := s.blobs(ctx, &in, blobs); err != nil {
			s.fail(err)
		}
	}
}

// blobs reads the blobs named in in, one per line, from git cat-file
// --batch and scans each under its file's path.
func (s *scanner) blobs(ctx context.Context, in io.Reader, files []stagedFile) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "cat-file", "--batch")
	cmd.Stdin = in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("git cat-file: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("git cat-file: %w", err)
	}
	r := bufio.NewReader(pipe)
	for _, f := range files {
		if err := s.blob(r, f); err != nil {
			cancel() // git may be blocked writing what is left
			_ = cmd.Wait()
			return err
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git cat-file: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// blob reads one "SHA TYPE SIZE\nCONTENT\n" answer of git cat-file --batch.
func (s *scanner) blob(r *bufio.Reader, f stagedFile) error {
	hdr, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading %s from git cat-file: %w", f.path, err)
	}
	h := strings.Fields(hdr)
	if len(h) != 3 || h[0] != f.blob {
		return fmt.Errorf("reading %s from git cat-file: unexpected answer %q", f.path, strings.TrimSpace(hdr))
	}
	size, err := strconv.ParseInt(h[2], 10, 64)
	if err != nil || size < 0 {
		return fmt.Errorf("reading %s from git cat-file: bad size %q", f.path, h[2])
	}
	if size > scanMaxSize {
		s.skip(f.path, "larger than 10 MiB")
		_, err := r.Discard(int(size) + 1)
		return err
	}
	buf := make([]byte, size+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return fmt.Errorf("reading %s from git cat-file: %w", f.path, err)
	}
	s.data(f.path, buf[:size])
	return nil
}

// parseRawDiff parses git diff --raw -z: per file ":SRCMODE DSTMODE SRCSHA
// DSTSHA STATUS", then the path, then for a rename or copy the new path,
// each ended by a NUL.
func parseRawDiff(out []byte) ([]stagedFile, error) {
	fields := strings.Split(string(out), "\x00")
	var files []stagedFile
	for i := 0; i < len(fields)-1; {
		meta := strings.Fields(fields[i])
		if len(meta) != 5 || !strings.HasPrefix(meta[0], ":") || meta[4] == "" {
			return nil, fmt.Errorf("parsing git diff --raw: unexpected %q", fields[i])
		}
		n := 1
		if meta[4][0] == 'R' || meta[4][0] == 'C' {
			n = 2
		}
		if i+n >= len(fields)-1 || fields[i+n] == "" {
			return nil, fmt.Errorf("parsing git diff --raw: no path after %q", fields[i])
		}
		files = append(files, stagedFile{mode: meta[1], blob: meta[3], path: fields[i+n]})
		i += 1 + n
	}
	return files, nil
}

// gitError adds what git said on stderr to the error of Output.
func gitError(what string, err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%s: %s", what, bytes.TrimSpace(ee.Stderr))
	}
	return fmt.Errorf("%s: %w", what, err)
}
