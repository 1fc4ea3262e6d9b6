package framework

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// memberLogLines is how many of a member's latest log lines are kept for the
// dump printed when a test fails.
const memberLogLines = 300

// A memberLog keeps one member's log across its restarts: the latest lines,
// to print when a test fails, and a count per message, so a test can ask
// whether something happened (for example that a snapshot was restored).
type memberLog struct {
	mu     sync.Mutex
	lines  []string
	next   int // where the next line goes once lines is full
	counts map[string]int
}

func newMemberLog() *memberLog { return &memberLog{counts: make(map[string]int)} }

// logger returns a logger that records into l at level Info and above.
func (l *memberLog) logger() *slog.Logger {
	text := slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo})
	return slog.New(countingHandler{Handler: text, log: l})
}

// Write implements io.Writer for the text handler, which writes one record per call.
func (l *memberLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) < memberLogLines {
		l.lines = append(l.lines, line)
	} else {
		l.lines[l.next] = line
		l.next = (l.next + 1) % memberLogLines
	}
	return len(p), nil
}

func (l *memberLog) count(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[msg]++
}

// logged returns how many records with message msg were logged.
func (l *memberLog) logged(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[msg]
}

// tail returns the kept lines, oldest first.
func (l *memberLog) tail() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append(append([]string(nil), l.lines[l.next:]...), l.lines[:l.next]...)
}

// A countingHandler counts each record's message before handing it on.
type countingHandler struct {
	slog.Handler
	log *memberLog
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.log.count(r.Message)
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return countingHandler{Handler: h.Handler.WithAttrs(attrs), log: h.log}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{Handler: h.Handler.WithGroup(name), log: h.log}
}
