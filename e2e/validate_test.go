package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// validBase is a complete, valid configuration the cases below mutate.
const validBase = `listen: 127.0.0.1:0
shutdown_timeout: 10s
admin:
  listen: 127.0.0.1:0
log:
  level: info
  format: json
credentials:
  tok:
    source: env
    name: E2E_TOKEN
routes:
  - name: api
    match: { path_prefix: /api/ }
    upstream: http://127.0.0.1:9
    strip_prefix: true
    inject: { credential: tok, as: bearer }
    timeout: 5s
`

// edit applies old->new replacements (each must apply) to text.
func edit(t testing.TB, text string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("edit: %q not in the config", pairs[i])
		}
		text = strings.Replace(text, pairs[i], pairs[i+1], 1)
	}
	return text
}

// lineOf returns the 1-based line of the first line containing marker.
func lineOf(t testing.TB, text, marker string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, marker) {
			return i + 1
		}
	}
	t.Fatalf("marker %q not in the config", marker)
	return 0
}

func TestValidateRejectsBadConfigs(t *testing.T) {
	t.Parallel()
	// Credential-shaped strings are assembled at run time so that no such
	// literal lives in the source tree.
	ghp := "ghp_" + strings.Repeat("x", 36)
	rememberSecret(t, ghp)
	literal := "hunter2-" + secretValue(t)
	rememberSecret(t, literal)

	type problem []string // markers of the acceptable lines for one problem
	cases := []struct {
		name     string
		text     string
		problems []problem
	}{
		{"unknown top-level key", edit(t, validBase, "shutdown_timeout: 10s", "shutdown_timeot: 10s"),
			[]problem{{"shutdown_timeot"}}},
		{"unknown route key", edit(t, validBase, "    strip_prefix: true", "    strip_prefx: true"),
			[]problem{{"strip_prefx"}}},
		{"bad duration", edit(t, validBase, "shutdown_timeout: 10s", "shutdown_timeout: forever"),
			[]problem{{"forever"}}},
		{"bad log level", edit(t, validBase, "level: info", "level: loud"),
			[]problem{{"level: loud"}}},
		{"unknown injection form", edit(t, validBase, "as: bearer", "as: carrier-pigeon"),
			[]problem{{"carrier-pigeon"}}},
		{"unknown credential", edit(t, validBase, "credential: tok", "credential: nope"),
			[]problem{{"credential: nope", "- name: api"}}},
		{"unknown source", edit(t, validBase, "source: env", "source: carrier"),
			[]problem{{"source: carrier", "  tok:"}}},
		{"upstream scheme", edit(t, validBase, "upstream: http://127.0.0.1:9", "upstream: ftp://127.0.0.1:9"),
			[]problem{{"upstream: ftp"}}},
		{"missing upstream", edit(t, validBase, "    upstream: http://127.0.0.1:9\n", ""),
			[]problem{{"- name: api", "match:"}}},
		{"literal admin token", edit(t, validBase, "  listen: 127.0.0.1:0\nlog:", "  listen: 127.0.0.1:0\n  token: "+literal+"\nlog:"),
			[]problem{{"token: hunter2"}}},
		{"credential-shaped string in a comment", validBase + "# old token: " + ghp + "\n",
			[]problem{{"# old token"}}},
		{"credential-shaped string in a value", edit(t, validBase, "log:", "telemetry:\n  service_name: "+ghp+"\nlog:"),
			[]problem{{"service_name"}}},
		{"every problem in one run", edit(t, validBase,
			"shutdown_timeout: 10s", "shutdown_timeout: forever",
			"    strip_prefix: true", "    strip_prefx: true",
			"as: bearer", "as: carrier-pigeon") + "# " + ghp + "\n",
			[]problem{{"forever"}, {"strip_prefx"}, {"carrier-pigeon"}, {"# ghp"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dataDir(t), "bad.yaml")
			writeTestFile(t, path, tc.text)
			res := runSidekey(t, nil, "validate", "-c", path)
			recordCapture("validate output in "+t.Name(), []byte(res.stdout+"\n"+res.stderr))
			if res.code != 1 {
				t.Errorf("validate exited %d, want 1", res.code)
			}
			for _, p := range tc.problems {
				var lines []string
				found := false
				for _, m := range p {
					prefix := fmt.Sprintf("%s:%d:", path, lineOf(t, tc.text, m))
					lines = append(lines, prefix)
					found = found || strings.Contains(res.stderr, prefix)
				}
				if !found {
					t.Errorf("stderr has no problem at %s", strings.Join(lines, " or "))
				}
			}
			lineRE := regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `:\d+: \S`)
			for _, l := range strings.Split(res.stderr, "\n") {
				if strings.TrimSpace(l) != "" && !lineRE.MatchString(l) {
					t.Errorf("stderr line %q is not FILE:LINE: message", maskSecrets(l))
				}
			}
			for _, v := range []string{ghp, literal} {
				if strings.Contains(res.stderr, v) || strings.Contains(res.stdout, v) {
					t.Errorf("validate printed a secret value")
				}
			}
			if t.Failed() {
				t.Logf("config:\n%s\nstderr:\n%s", maskSecrets(numbered(tc.text)), maskSecrets(res.stderr))
			}
		})
	}

	t.Run("valid config", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(dataDir(t), "good.yaml")
		writeTestFile(t, path, validBase)
		res := runSidekey(t, nil, "validate", "-c", path)
		if res.code != 0 {
			t.Errorf("validate of a valid config exited %d, want 0; stderr:\n%s", res.code, res.stderr)
		}
	})
}

func numbered(text string) string {
	var b strings.Builder
	for i, l := range strings.Split(text, "\n") {
		fmt.Fprintf(&b, "%3d  %s\n", i+1, l)
	}
	return b.String()
}

func TestRunStartupFailures(t *testing.T) {
	t.Parallel()

	t.Run("bad config", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(dataDir(t), "bad.yaml")
		text := edit(t, validBase, "shutdown_timeout: 10s", "shutdown_timeout: forever")
		writeTestFile(t, path, text)
		res := runSidekey(t, nil, "run", "-c", path)
		if res.code != 1 {
			t.Errorf("run with a bad config exited %d, want 1", res.code)
		}
		var lines []string
		for _, l := range strings.Split(res.stderr, "\n") {
			if strings.TrimSpace(l) != "" {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 {
			t.Errorf("stderr has %d lines, want a one-line reason:\n%s", len(lines), res.stderr)
		} else if want := fmt.Sprintf("%s:%d:", path, lineOf(t, text, "forever")); !strings.Contains(lines[0], want) {
			t.Errorf("reason %q does not name %s", lines[0], want)
		}
	})

	t.Run("port in use", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		path := filepath.Join(dataDir(t), "busy.yaml")
		writeTestFile(t, path, edit(t, validBase, "listen: 127.0.0.1:0\nshutdown", "listen: "+ln.Addr().String()+"\nshutdown"))
		res := runSidekey(t, []procOption{withEnv("E2E_TOKEN=x")}, "run", "-c", path)
		if res.code != 1 {
			t.Errorf("run with the port in use exited %d, want 1; stderr:\n%s", res.code, res.stderr)
		}
		if strings.TrimSpace(res.stderr) == "" {
			t.Error("no reason on stderr")
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"frobnicate"}, {"run", "--no-such-flag"}} {
			if res := runSidekey(t, nil, args...); res.code != 2 {
				t.Errorf("sidekey %s exited %d, want 2", strings.Join(args, " "), res.code)
			}
		}
	})
}

// TestConfigFromStdin runs `sidekey run -c -` with the config on stdin.
func TestConfigFromStdin(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	writeSecretFile(t, filepath.Join(dir, "tok"), secretValue(t))
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(nil,
		[]string{fileCred("tok", filepath.Join(dir, "tok"))},
		[]route{{name: "in", prefix: "/in/", upstream: up.URL, strip: true, inject: "{credential: tok, as: bearer}"}}),
		withStdinConfig())
	waitOK(t, p, "/in/x")
}
