package proxy

import (
	"bufio"
	"encoding/json"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/events"
)

const (
	// defaultHeartbeat is how often an idle event stream gets a comment.
	defaultHeartbeat = 15 * time.Second
	// eventsWriteWait bounds each write of an event stream to its client:
	// a client that stops reading for that long is disconnected. Until
	// then its backlog is bounded by the broker, which drops it first.
	eventsWriteWait = 10 * time.Second
	// eventsRetry is the reconnection delay the stream suggests to
	// EventSource clients, in milliseconds.
	eventsRetry = "2000"
)

// events answers GET /v1/events with Server-Sent Events: first the events
// after the one named by Last-Event-ID (what EventSource sends when it
// reconnects) or ?since=ID, from the broker's ring, then each new one as
// it is published, and a comment every Heartbeat while nothing happens.
// Without either only new events are sent. Each event is
//
//	id: 42
//	event: credential.rotated
//	data: {"id":42,"kind":"credential.rotated","time":...}
//
// with the JSON passed through Scrub like every admin answer. The stream
// ends when the client goes, when the admin server shuts down, or when the
// client falls more than the broker's buffer behind: it is dropped, never
// waited for, and can reconnect with Last-Event-ID to replay what it
// missed.
func (a *Admin) events(ctx *fasthttp.RequestCtx) {
	since, replay, ok := eventsCursor(ctx)
	if !ok {
		writeError(ctx, fasthttp.StatusBadRequest, codeBadRequest, "")
		return
	}
	h := &ctx.Response.Header
	h.SetContentType("text/event-stream; charset=utf-8")
	h.Set(fasthttp.HeaderCacheControl, "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx in front: do not buffer the stream
	ctx.SetConnectionClose()
	if ctx.IsHead() {
		return
	}
	sub := a.Events.Subscribe(since, replay)
	// The stream writer runs on its own goroutine and must not touch ctx:
	// it gets the connection (for write deadlines) and the server's
	// shutdown channel instead. The connection is closed after the stream,
	// so the deadlines set on it never reach another request.
	s := &eventStream{sub: sub, conn: ctx.Conn(), done: ctx.Done(), scrub: a.Scrub,
		heartbeat: a.Heartbeat, writeWait: a.writeWait}
	if s.heartbeat <= 0 {
		s.heartbeat = defaultHeartbeat
	}
	if s.writeWait <= 0 {
		s.writeWait = eventsWriteWait
	}
	ctx.Response.ImmediateHeaderFlush = true
	ctx.SetBodyStreamWriter(s.run)
}

// eventsCursor reads where a client wants its replay to start:
// Last-Event-ID wins over ?since= (EventSource keeps the URL it was opened
// with and adds the header on reconnection). ok is false for an ID that is
// not a number.
func eventsCursor(ctx *fasthttp.RequestCtx) (since uint64, replay, ok bool) {
	v := ctx.Request.Header.Peek("Last-Event-ID")
	if len(v) == 0 {
		v = ctx.QueryArgs().Peek("since")
	}
	if len(v) == 0 {
		return 0, false, true
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	return n, true, err == nil
}

// eventStream writes one subscription to one client.
type eventStream struct {
	sub       *events.Subscription
	conn      net.Conn
	done      <-chan struct{}
	scrub     func([]byte) []byte
	heartbeat time.Duration
	writeWait time.Duration
	buf       []byte
}

// run is the body stream writer: it returns when the client cannot be
// written to, the subscription ends or the server shuts down.
func (s *eventStream) run(w *bufio.Writer) {
	defer s.sub.Close()
	w.WriteString("retry: " + eventsRetry + "\n: sidekey events\n\n")
	if s.sub.Missed {
		w.WriteString(": some events asked for are no longer held; the replay starts later\n\n")
	}
	for _, e := range s.sub.Replay {
		s.write(w, e)
	}
	if !s.flush(w) {
		return
	}
	beat := time.NewTicker(s.heartbeat)
	defer beat.Stop()
	for {
		select {
		case e, open := <-s.sub.C():
			if !open {
				w.WriteString(": dropped: this client fell too far behind; reconnect with Last-Event-ID to replay\n\n")
				s.flush(w)
				return
			}
			s.write(w, e)
			for more := len(s.sub.C()); more > 0; more-- { // a burst goes in one write
				if e, open = <-s.sub.C(); open {
					s.write(w, e)
				}
			}
		case <-beat.C:
			w.WriteString(": heartbeat\n\n")
		case <-s.done:
			return
		}
		if !s.flush(w) {
			return
		}
	}
}

// write adds one event's frame to w.
func (s *eventStream) write(w *bufio.Writer, e events.Event) {
	data, err := json.Marshal(e)
	if err != nil {
		return
	}
	if s.scrub != nil {
		data = s.scrub(data)
	}
	s.buf = append(s.buf[:0], "id: "...)
	s.buf = strconv.AppendUint(s.buf, e.ID, 10)
	s.buf = append(s.buf, "\nevent: "...)
	s.buf = append(s.buf, e.Kind...)
	s.buf = append(s.buf, "\ndata: "...)
	s.buf = append(s.buf, data...)
	s.buf = append(s.buf, "\n\n"...)
	w.Write(s.buf)
}

// flush sends what w holds, giving the client writeWait to take it;
// false when the stream is over.
func (s *eventStream) flush(w *bufio.Writer) bool {
	if s.conn != nil {
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.writeWait))
	}
	return w.Flush() == nil
}
