package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sidekey/sidekey/config"
)

// One value per credential shape of the linter, assembled at run time so
// that this file holds none literally.
var (
	fxPEM    = "-----BEGIN RSA " + "PRIVATE KEY-----"
	fxGitHub = "ghp_" + strings.Repeat("aB3", 12)
	fxPAT    = "github_pat_" + strings.Repeat("A1_b", 6)
	fxAKIA   = "AKIA" + strings.Repeat("Z7", 8)
	fxASIA   = "ASIA" + strings.Repeat("Q4", 8)
	fxSlack  = "xoxb-" + "1234567890-" + strings.Repeat("ab", 8)
	fxSK     = "sk-" + strings.Repeat("Ab3", 16)
	fxLive   = "sk_live_" + strings.Repeat("x7", 12)
	fxRK     = "rk_test_" + strings.Repeat("x7", 12)
	fxJWT    = "eyJ" + "hbGciOiJIUzI1NiJ9" + "." + "eyJ" + "zdWIiOiIxMjM0NTY3ODkwIn0" + "." + strings.Repeat("s1G-", 8)
)

var fxAll = []string{fxPEM, fxGitHub, fxPAT, fxAKIA, fxASIA, fxSlack, fxSK, fxLive, fxRK, fxJWT}

func runScan(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"scan"}, args...), strings.NewReader(""), &out, &errb)
	for _, v := range fxAll {
		if strings.Contains(out.String(), v) || strings.Contains(errb.String(), v) {
			t.Errorf("scan %v printed a value:\nstdout:\n%s\nstderr:\n%s", args, out.String(), errb.String())
		}
	}
	return code, out.String(), errb.String()
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// plantTree writes one file per credential shape at known lines in nested
// folders, and the same values where scan must pass over them. It returns
// what scan . prints there and, with -v, on stderr.
func plantTree(t *testing.T, root string) (want, wantSkipped []string) {
	t.Helper()
	writeFiles(t, root, map[string]string{
		"aws.env":            "# keys\nA=" + fxAKIA + "\nB=" + fxASIA + "\n",
		"fixture_test.go":    "package x\n\nvar tok = \"" + fxGitHub + "\" // " + config.AllowSecret + "\nvar tok2 = \"" + fxSK + "\"\n",
		"keys/id_rsa":        "x\n\n" + fxPEM + "\nMIIE\n",
		"keys/deep/er/gh.go": "package x\n// " + fxGitHub,
		"keys/deep/pat.yaml": "a: 1\nb: 2\nc: 3\nd: 4\ntoken: " + fxPAT + "\n",
		"late-nul.log":       strings.Repeat("a", 8000) + "\x00\n" + fxGitHub + "\n", // binary only in the first 8000 bytes
		"slack/app.json":     `{"token": "` + fxSlack + `"}`,
		"stripe/pay.rb":      "KEY = '" + fxLive + "'\n\n\nRK = '" + fxRK + "'\n",
		"web/jwt.md":         "# x\n\nAuthorization: Bearer " + fxJWT + "\n",

		".git/config":       "[remote]\n\turl = https://x:" + fxGitHub + "@github.com/x\n",
		".hg/hgrc":          fxGitHub,
		".svn/entries":      fxGitHub,
		"src/.git/HEAD":     fxGitHub,
		"bin.dat":           "\x01\x00\x02" + fxGitHub + "\n",
		"big.txt":           fxGitHub + "\n" + strings.Repeat("x", scanMaxSize),
		"keys/public.pem":   "-----BEGIN PUBLIC KEY-----\nMIIB\n",
		"web/allowed.md":    "<!-- " + config.AllowSecret + " --> " + fxJWT + "\n",
		"stripe/allowed.rb": "KEY = '" + fxLive + "' # " + config.AllowSecret + "\n",
	})
	want = []string{
		"aws.env:2: an AWS access key ID",
		"aws.env:3: an AWS access key ID",
		"fixture_test.go:4: an sk- secret key",
		"keys/deep/er/gh.go:2: a GitHub token",
		"keys/deep/pat.yaml:5: a GitHub fine-grained token",
		"keys/id_rsa:3: a PEM private key",
		"late-nul.log:2: a GitHub token",
		"slack/app.json:1: a Slack token",
		"stripe/pay.rb:1: a Stripe secret key",
		"stripe/pay.rb:4: a Stripe secret key",
		"web/jwt.md:3: a JWT",
	}
	wantSkipped = []string{
		".git: passed over: version control folder",
		".hg: passed over: version control folder",
		".svn: passed over: version control folder",
		"big.txt: passed over: larger than 10 MiB",
		"bin.dat: passed over: binary",
	}

	// Links out of the tree, to a file and to a folder, are not followed.
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{"secret.txt": fxGitHub, "dir/secret.txt": fxGitHub})
	if err := os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(root, "link-out")); err == nil {
		if err := os.Symlink(filepath.Join(outside, "dir"), filepath.Join(root, "linkdir")); err != nil {
			t.Fatal(err)
		}
		wantSkipped = append(wantSkipped, "link-out: passed over: symbolic link", "linkdir: passed over: symbolic link")
	}
	// Opening a FIFO would block until a writer came.
	if err := exec.Command("mkfifo", filepath.Join(root, "pipe")).Run(); err == nil {
		wantSkipped = append(wantSkipped, "pipe: passed over: not a regular file")
	}
	wantSkipped = append(wantSkipped, "src/.git: passed over: version control folder")
	slices.Sort(wantSkipped)
	return want, wantSkipped
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func TestScanPlantedTree(t *testing.T) {
	root := t.TempDir()
	want, wantSkipped := plantTree(t, root)
	t.Chdir(root)

	code, out, errOut := runScan(t, ".")
	if code != exitFailed || !slices.Equal(lines(out), want) || errOut != "" {
		t.Errorf("scan . = %d\nstdout:\n%s\nstderr:\n%s\nwant 1 and stdout:\n%s", code, out, errOut, strings.Join(want, "\n"))
	}

	code, out, errOut = runScan(t, ".", "-v")
	var skipped []string
	for _, l := range lines(errOut) {
		skipped = append(skipped, strings.TrimPrefix(l, "sidekey scan: "))
	}
	slices.Sort(skipped)
	if code != exitFailed || !slices.Equal(lines(out), want) || !slices.Equal(skipped, wantSkipped) {
		t.Errorf("scan . -v = %d\nstdout:\n%s\nstderr:\n%s\nwant on stderr:\n%s", code, out, errOut, strings.Join(wantSkipped, "\n"))
	}

	// Names are as given: an absolute root, a file, a link the user named.
	code, out, _ = runScan(t, filepath.Join(root, "web"), "stripe/pay.rb", "link-out")
	want = []string{filepath.Join(root, "web", "jwt.md") + ":3: a JWT", "stripe/pay.rb:1: a Stripe secret key", "stripe/pay.rb:4: a Stripe secret key"}
	if _, err := os.Lstat("link-out"); err == nil {
		want = append(want, "link-out:1: a GitHub token")
	}
	if code != exitFailed || !slices.Equal(lines(out), want) {
		t.Errorf("scan of named paths = %d\n%s\nwant:\n%s", code, out, strings.Join(want, "\n"))
	}
}

func TestScanCleanTree(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"config.yaml":  "token: env:GITHUB_TOKEN\nca: file:/etc/ssl/ca.pem\n",
		"a/b/notes.md": "prefix: ghp_ is a classic token prefix\n-----BEGIN CERTIFICATE-----\n",
		"a/fixture.go": "var tok = \"" + fxGitHub + "\" // " + config.AllowSecret + "\n",
		"empty":        "",
		".git/config":  fxGitHub,
	})
	code, out, errOut := runScan(t, root)
	if code != exitOK || out != "" || errOut != "" {
		t.Errorf("scan of a clean tree = %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestScanUsageAndErrors(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"tok.txt": fxSlack, "-v": fxSK})
	t.Chdir(root)
	for _, tc := range []struct {
		args       []string
		code       int
		out, inErr string
	}{
		{nil, exitUsage, "", "usage: sidekey scan"},
		{[]string{"-v"}, exitUsage, "", "usage: sidekey scan"},
		{[]string{"--staged", "."}, exitUsage, "", "usage: sidekey scan"},
		{[]string{"-x", "."}, exitUsage, "", "not defined: -x"},
		{[]string{"-h"}, exitOK, scanUsage, ""},
		// Flags after paths; "--" ends the flags.
		{[]string{"tok.txt", "-v"}, exitFailed, "tok.txt:1: a Slack token\n", ""},
		{[]string{"--", "-v"}, exitFailed, "-v:1: an sk- secret key\n", ""},
		// A path that cannot be read fails the scan, and the rest is scanned.
		{[]string{"nosuch", "tok.txt"}, exitFailed, "tok.txt:1: a Slack token\n", "sidekey scan: stat nosuch: "},
	} {
		code, out, errOut := runScan(t, tc.args...)
		if code != tc.code || out != tc.out || !strings.Contains(errOut, tc.inErr) || (tc.inErr == "" && errOut != "") {
			t.Errorf("scan %q = %d\nstdout:\n%s\nstderr:\n%s\nwant %d, stdout %q, stderr with %q", tc.args, code, out, errOut, tc.code, tc.out, tc.inErr)
		}
	}
}

func TestUsageNamesAllowMarker(t *testing.T) {
	for name, text := range map[string]string{"usage": usage, "scanUsage": scanUsage} {
		if !strings.Contains(text, config.AllowSecret) || !strings.Contains(text, "scan --staged") {
			t.Errorf("%s does not name %s and scan --staged", name, config.AllowSecret)
		}
	}
}

// gitRepo makes an empty repository in a temporary folder, makes it the
// working directory, and keeps the user's git configuration and a hook's
// GIT_* variables out of the test.
func gitRepo(t *testing.T) string {
	t.Helper()
	for _, k := range []string{"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CEILING_DIRECTORIES"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for k, v := range map[string]string{
		"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.DevNull,
		"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
		"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
	} {
		t.Setenv(k, v)
	}
	repo := t.TempDir()
	t.Chdir(repo)
	git(t, "init", "-q")
	return repo
}

func git(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// TestScanStaged checks that --staged scans the index, not the working
// tree: a staged token removed from the working tree is reported, a token
// only in the working tree is not.
func TestScanStaged(t *testing.T) {
	repo := gitRepo(t)
	writeFiles(t, repo, map[string]string{"gone.txt": "bye\n", "r.txt": fxJWT + "\n"})
	git(t, "add", ".")
	git(t, "commit", "-qm", "first")

	writeFiles(t, repo, map[string]string{
		"a.txt":       "one\n" + fxGitHub + "\n",
		"d i/b c.txt": "clean\n",
		"big.txt":     fxGitHub + "\n" + strings.Repeat("x", scanMaxSize), // read past, in step
		"bin.dat":     "\x00" + fxSK,
		"m.go":        "var tok = \"" + fxGitHub + "\" // " + config.AllowSecret + "\n",
	})
	git(t, "add", ".")
	git(t, "rm", "-q", "gone.txt")
	git(t, "mv", "r.txt", "renamed.txt")
	if err := os.Symlink("a.txt", "l"); err == nil {
		git(t, "add", "l")
	}
	writeFiles(t, repo, map[string]string{"a.txt": "one\n", "d i/b c.txt": "clean\n" + fxAKIA + "\n"})

	code, out, errOut := runScan(t, "--staged")
	want := "a.txt:2: a GitHub token\nrenamed.txt:1: a JWT\n"
	if code != exitFailed || out != want || errOut != "" {
		t.Errorf("scan --staged = %d\nstdout:\n%s\nstderr:\n%s\nwant 1 and:\n%s", code, out, errOut, want)
	}
	_, _, errOut = runScan(t, "--staged", "-v")
	for _, l := range []string{"big.txt: passed over: larger than 10 MiB", "bin.dat: passed over: binary"} {
		if !strings.Contains(errOut, "sidekey scan: "+l+"\n") {
			t.Errorf("scan --staged -v stderr:\n%s\nwant %s", errOut, l)
		}
	}

	// A subfolder runs against the same index, with the same paths.
	t.Chdir(filepath.Join(repo, "d i"))
	if code, out, _ := runScan(t, "--staged"); code != exitFailed || out != want {
		t.Errorf("scan --staged in a subfolder = %d\n%s", code, out)
	}
	t.Chdir(repo)

	git(t, "commit", "-qm", "second")
	if code, out, errOut := runScan(t, "--staged"); code != exitOK || out != "" || errOut != "" {
		t.Errorf("scan --staged with nothing staged = %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	// A hook of git commit -a or git commit PATH sees a temporary index
	// through GIT_INDEX_FILE; scan must read that one.
	t.Setenv("GIT_INDEX_FILE", filepath.Join(repo, ".git", "other-index"))
	git(t, "read-tree", "HEAD")
	writeFiles(t, repo, map[string]string{"tok.txt": fxSlack})
	git(t, "add", "tok.txt")
	if code, out, _ := runScan(t, "--staged"); code != exitFailed || out != "tok.txt:1: a Slack token\n" {
		t.Errorf("scan --staged with GIT_INDEX_FILE = %d\n%s", code, out)
	}
}

func TestScanStagedOutsideRepository(t *testing.T) {
	dir := t.TempDir()
	gitRepo(t) // for the environment
	t.Setenv("GIT_CEILING_DIRECTORIES", filepath.Dir(dir))
	t.Chdir(dir)
	code, out, errOut := runScan(t, "--staged")
	if code != exitFailed || out != "" || !strings.Contains(errOut, "not a git repository") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("scan --staged outside a repository = %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestParseRawDiff(t *testing.T) {
	const z = "\x00"
	for _, tc := range []struct {
		in   string
		want []stagedFile
		err  bool
	}{
		{in: ""},
		{in: ":000000 100644 0000 aaaa A" + z + "new file" + z, want: []stagedFile{{"100644", "aaaa", "new file"}}},
		{in: ":100644 100755 aaaa bbbb M" + z + "a" + z + ":100644 100644 cccc dddd R087" + z + "old" + z + "d/new" + z +
			":100644 120000 eeee ffff C100" + z + "x" + z + "y" + z,
			want: []stagedFile{{"100755", "bbbb", "a"}, {"100644", "dddd", "d/new"}, {"120000", "ffff", "y"}}},
		{in: "garbage" + z + "a" + z, err: true},
		{in: ":100644 100644 aaaa bbbb M" + z, err: true},
		{in: ":100644 100644 aaaa bbbb R100" + z + "old" + z, err: true},
		{in: ":100644 100644 aaaa bbbb M" + z + z, err: true},
	} {
		got, err := parseRawDiff([]byte(tc.in))
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("parseRawDiff(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParseRawDiff(f *testing.F) {
	f.Add([]byte(":100644 100644 aaaa bbbb R087\x00old\x00new\x00"))
	f.Add([]byte(":000000 100644 0000 aaaa A\x00a\x00:100644 100644 a b M\x00b\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		files, err := parseRawDiff(in)
		for _, sf := range files {
			if err != nil || sf.path == "" || sf.blob == "" || sf.mode == "" {
				t.Fatalf("parseRawDiff(%q) = %v, %v", in, files, err)
			}
		}
	})
}
