package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium. Without it the test is skipped on
// a developer's machine and fails in CI, whose .ci/run installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (.ci/run installs Debian's chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// browser starts a headless Chromium with a fresh profile and returns a
// tab's context. Console errors and uncaught exceptions go to problems.
func browser(t *testing.T, width, height int) (context.Context, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var problems []string
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *cdplog.EventEntryAdded:
			// A browser asks every site for /favicon.ico; its 404 is not the page's.
			if ev.Entry.Level == cdplog.EntryLevelError && !strings.HasSuffix(ev.Entry.URL, "/favicon.ico") {
				problems = append(problems, fmt.Sprintf("console %s: %s", ev.Entry.Source, ev.Entry.Text))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			problems = append(problems, fmt.Sprintf("exception at %d:%d: %s", d.LineNumber, d.ColumnNumber, d.Text))
		}
	}))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

// evaluate runs a JavaScript expression in the tab, within 10 s.
func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true.
func waitJS(t *testing.T, ctx context.Context, limit time.Duration, what, expr string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if _, err := chromedp.Run(c, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		dom := evaluate[string](t, ctx, `document.querySelector("main") ? document.querySelector("main").innerText : document.body.innerText`)
		t.Fatalf("%s: not within %v (%v); the page shows:\n%s", what, limit, err, maskSecrets(dom))
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) []byte {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
	return png
}

// TestStatusPage opens the admin listener's status page in headless
// Chromium: its script and styles run under its strict CSP (no console
// error), it lists the credentials, certificates, routes and callers, its
// timeline follows /v1/events, and after a forced rotation the new version
// shows without a reload; at phone width nothing overflows. Screenshots go
// to the test's directory, and to SIDEKEY_STATUS_SCREENSHOT (the README's
// picture, FILE.png and FILE-phone.png) when that is set.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	dir := dataDir(t)
	adminToken, callerToken := secretValue(t), secretValue(t)
	githubPath, partnerPath := filepath.Join(dir, "github"), filepath.Join(dir, "partner.json")
	values := []string{secretValue(t), secretValue(t)}
	writeSecretFile(t, githubPath, values[0])
	writeTestFile(t, partnerPath, fmt.Sprintf(`{"token": %q, "expires_at": %q}`, values[1],
		time.Now().Add(47*time.Minute).UTC().Format(time.RFC3339)))
	up := newUpstream(t, nil)
	p := startSidekey(t, configYAML(
		[]string{"admin:", "  listen: 127.0.0.1:0", "  token: env:SIDEKEY_ADMIN_TOKEN",
			"callers:", "  ci-runner:", "    token: env:CI_TOKEN"},
		[]string{fileCred("github", githubPath), execCred("partner", []string{cat, partnerPath}, "refresh: 10m")},
		[]route{
			{name: "github", prefix: "/github/", upstream: up.URL, strip: true, inject: "{credential: github, as: bearer}"},
			{name: "partner", host: "api.partner.localhost", upstream: up.URL, inject: "{credential: partner, as: header, header: X-API-Key}",
				extra: []string{"callers: [ci-runner]"}},
		}),
		withEnv("SIDEKEY_ADMIN_TOKEN="+adminToken, "CI_TOKEN="+callerToken))
	waitOKWith(t, p, "/github/ready", "Proxy-Authorization", "Bearer "+callerToken)
	p.get(t, "/github/x") // no caller: refused, counted, an event
	p.get(t, "/github/x", "Host", "rebind.attacker.example")

	ctx, problems := browser(t, 1280, 900)
	nav, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(nav, chromedp.Navigate(p.AdminURL+"/"))
	if err != nil {
		t.Fatalf("opening the status page: %v", err)
	}
	if resp.Status != http.StatusOK || !strings.Contains(fmt.Sprint(resp.Headers["Content-Security-Policy"]), "default-src 'none'") {
		t.Fatalf("GET /: %d, headers %v", resp.Status, resp.Headers)
	}
	row := func(name, cell string) string {
		return fmt.Sprintf(`(document.querySelector('tr[data-credential=%q] .%s') || {}).textContent`, name, cell)
	}
	waitJS(t, ctx, 10*time.Second, "the live stream and the credentials", row("github", "version")+` === "1" && `+
		row("partner", "version")+` === "1" && document.getElementById("conn").className === "live"`)
	waitJS(t, ctx, 5*time.Second, "the routes, callers and timeline",
		`!!(document.querySelector('tr[data-route="partner"]') && document.querySelector('tr[data-caller="ci-runner"]') &&
		 document.querySelector('#timeline li[data-kind="credential.rotated"]') &&
		 document.querySelector('#timeline li[data-kind="caller.refused"]'))`)
	if got := evaluate[string](t, ctx, row("partner", "expires")); !strings.HasPrefix(got, "46m") && !strings.HasPrefix(got, "47m") {
		t.Errorf("partner's expires-in shows %q, want about 47m", got)
	}
	// The inline style applied (allowed by the CSP): the header sticks.
	if pos := evaluate[string](t, ctx, `getComputedStyle(document.querySelector("header")).position`); pos != "sticky" {
		t.Errorf("the header's position is %q: the page's style did not apply", pos)
	}
	countdown := evaluate[string](t, ctx, row("partner", "expires"))
	waitJS(t, ctx, 3*time.Second, "the countdown to tick", row("partner", "expires")+` !== `+quote(countdown))

	// A forced rotation shows up without a reload.
	evaluate[bool](t, ctx, `window.notReloaded = true`)
	values = append(values, secretValue(t))
	writeSecretFile(t, githubPath, values[len(values)-1])
	rotated := time.Now()
	if code, body := p.admin(t, http.MethodPost, "/v1/credentials/github/rotate", adminToken); code != http.StatusOK {
		t.Fatalf("POST rotate: %d %s", code, maskSecrets(string(body)))
	}
	waitJS(t, ctx, 2*time.Second, "version 2 on the page", row("github", "version")+` === "2" || `+row("github", "version")+` === "3"`)
	t.Logf("the page showed the new version %v after the rotation", time.Since(rotated).Round(time.Millisecond))
	if !evaluate[bool](t, ctx, `window.notReloaded === true`) {
		t.Error("the page was reloaded")
	}
	fp := evaluate[string](t, ctx, row("github", "fingerprint"))
	code, body := p.admin(t, http.MethodGet, "/v1/credentials", "")
	if code != http.StatusOK || !strings.Contains(string(body), `"fingerprint": "`+fp+`"`) {
		t.Errorf("the page shows fingerprint %q, not in /v1/credentials", fp)
	}
	waitJS(t, ctx, 2*time.Second, "the rotation in the timeline",
		`[...document.querySelectorAll('#timeline li[data-kind="credential.rotated"]')].some(li => li.textContent.includes("github v2 (was v1)"))`)

	html := evaluate[string](t, ctx, `document.documentElement.outerHTML`)
	recordCapture("the status page's DOM in "+t.Name(), []byte(html))
	wantNoValue(t, "the status page", html, append(values, adminToken, callerToken)...)
	waitJS(t, ctx, 5*time.Second, "the highlights to fade", `document.getAnimations().length === 0`)
	shot := os.Getenv("SIDEKEY_STATUS_SCREENSHOT")
	keep := func(png []byte, suffix string) {
		if shot != "" {
			if err := os.WriteFile(strings.TrimSuffix(shot, ".png")+suffix+".png", png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	keep(screenshot(t, ctx, "status.png"), "")

	// Phone width: the tables become cards, nothing scrolls sideways.
	c, cancelVP := context.WithTimeout(ctx, 10*time.Second)
	defer cancelVP()
	if err := chromedp.Do(c, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 5*time.Second, "the phone layout", `getComputedStyle(document.querySelector("thead")).display === "none"`)
	if w := evaluate[int](t, ctx, `document.documentElement.scrollWidth - window.innerWidth`); w > 0 {
		t.Errorf("at 390 px the page is %d px too wide", w)
	}
	keep(screenshot(t, ctx, "status-phone.png"), "-phone")
	if ps := problems(); len(ps) > 0 {
		t.Errorf("the page logged errors (a CSP refusal shows here):\n%s", maskSecrets(strings.Join(ps, "\n")))
	}
}
