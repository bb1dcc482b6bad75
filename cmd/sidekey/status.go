package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/proxy"
)

const defaultAdmin = "http://127.0.0.1:9901"

// adminFlags parses --admin (and --json for status) with positional
// arguments allowed before or after them.
func adminFlags(name string, args []string, stderr io.Writer) (admin string, asJSON bool, pos []string, ok bool) {
	fs := flag.NewFlagSet("sidekey "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&admin, "admin", defaultAdmin, "admin API base URL")
	if name == "status" || name == "watch" {
		fs.BoolVar(&asJSON, "json", false, "print the admin API's JSON")
	}
	for {
		if err := fs.Parse(args); err != nil {
			return "", false, nil, false
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	return strings.TrimSuffix(admin, "/"), asJSON, pos, true
}

// cmdStatus prints the credentials and certificates the admin API reports.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	admin, asJSON, pos, ok := adminFlags("status", args, stderr)
	if !ok || len(pos) > 0 {
		fmt.Fprintln(stderr, "usage: sidekey status [--admin URL] [--json]")
		return exitUsage
	}
	body, err := adminCall(ctx, http.MethodGet, admin+"/v1/credentials")
	if err != nil {
		fmt.Fprintf(stderr, "sidekey status: %v\n", err)
		return exitFailed
	}
	if asJSON {
		_, _ = stdout.Write(body)
		return exitOK
	}
	var sts []injector.Status
	if err := json.Unmarshal(body, &sts); err != nil {
		fmt.Fprintf(stderr, "sidekey status: %s: %v\n", admin, err)
		return exitFailed
	}
	now := time.Now()
	printStatus(stdout, sts, now)
	// An older sidekey has no /v1/callers: its table is left out.
	if body, err := adminCall(ctx, http.MethodGet, admin+"/v1/callers"); err == nil {
		var callers []proxy.CallerInfo
		if json.Unmarshal(body, &callers) == nil && len(callers) > 0 {
			fmt.Fprintln(stdout)
			printCallers(stdout, callers, now)
		}
	}
	return exitOK
}

// printCallers prints each caller's use; never a token, which the admin
// API does not have to give.
func printCallers(w io.Writer, cs []proxy.CallerInfo, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CALLER\tKIND\tREQUESTS\tREFUSED\tLAST SEEN")
	for _, c := range cs {
		seen := "never"
		if !c.LastSeen.IsZero() {
			seen = now.Sub(c.LastSeen).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", c.Name, c.Kind, c.Requests, c.Refused, seen)
	}
	_ = tw.Flush()
}

func printStatus(w io.Writer, sts []injector.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE\tVERSION\tSTATE\tEXPIRES IN\tROTATIONS\tLAST ERROR")
	for _, st := range sts {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\n", st.Name, st.Source, st.Version, st.State,
			expiresIn(st.ExpiresAt, now), st.Rotations, orDash(st.LastError))
	}
	_ = tw.Flush()
}

func expiresIn(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "never"
	case t.Before(now):
		return "expired " + now.Sub(t).Round(time.Second).String() + " ago"
	}
	return t.Sub(now).Round(time.Second).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cmdRotate forces a refresh of one credential.
func cmdRotate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	admin, _, pos, ok := adminFlags("rotate", args, stderr)
	if !ok || len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: sidekey rotate NAME [--admin URL]   (admin token from SIDEKEY_ADMIN_TOKEN)")
		return exitUsage
	}
	body, err := adminCall(ctx, http.MethodPost, admin+"/v1/credentials/"+pos[0]+"/rotate")
	if err != nil {
		fmt.Fprintf(stderr, "sidekey rotate %s: %v\n", pos[0], err)
		return exitFailed
	}
	var st injector.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "sidekey rotate: %v\n", err)
		return exitFailed
	}
	printStatus(stdout, []injector.Status{st}, time.Now())
	return exitOK
}

// adminCall performs one admin API call, with the admin token from
// SIDEKEY_ADMIN_TOKEN when set, and returns the body of a 2xx answer.
func adminCall(ctx context.Context, method, url string) ([]byte, error) {
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	if tok := os.Getenv("SIDEKEY_ADMIN_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Message string }
		_ = json.Unmarshal(body, &e)
		return nil, fmt.Errorf("%s: %s %s", resp.Status, e.Error, e.Message)
	}
	return body, nil
}
