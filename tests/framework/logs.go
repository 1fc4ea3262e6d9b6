package framework

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
)

// memberLogLines is how many of a member's latest log lines are kept for the
// dump printed when a test fails.
const memberLogLines = 300

// A memberLog keeps one member's log across its restarts: the latest lines,
// to print when a test fails, and a count per message, so a test can ask
// whether something happened (for example that a snapshot was restored).
// With a file (setFile), every line is also written there in full.
type memberLog struct {
	mu     sync.Mutex
	lines  []string
	next   int // where the next line goes once lines is full
	counts map[string]int
	file   io.Writer
}

func newMemberLog() *memberLog { return &memberLog{counts: make(map[string]int)} }

// setFile makes l copy every line to w from now on.
func (l *memberLog) setFile(w io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.file = w
}

// logger returns a logger that records into l at level Info and above.
func (l *memberLog) logger() *slog.Logger {
	text := slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo})
	return slog.New(countingHandler{Handler: text, log: l})
}

// Write implements io.Writer for the text handler, which writes one record
// per call; countingHandler has counted its message already.
func (l *memberLog) Write(p []byte) (int, error) {
	l.add(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// add keeps line (without its newline) and copies it to the file.
func (l *memberLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) < memberLogLines {
		l.lines = append(l.lines, line)
	} else {
		l.lines[l.next] = line
		l.next = (l.next + 1) % memberLogLines
	}
	if l.file != nil {
		// The file is a copy for people; a failed write must not fail the member.
		_, _ = io.WriteString(l.file, line+"\n")
	}
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

// output returns a writer for a member process's stdout and stderr: it cuts
// the stream into lines, keeps each, and counts the message of each slog
// record at level Info or above. Lines that are not slog records (the one
// line catalogd prints when it exits on an error, a panic's stack) are kept
// but not counted.
func (l *memberLog) output() io.Writer { return &lineSplitter{log: l} }

// A lineSplitter hands complete lines to its memberLog. exec.Cmd calls Write
// from one goroutine at a time when Stdout and Stderr are the same writer.
type lineSplitter struct {
	log     *memberLog
	partial []byte
}

func (s *lineSplitter) Write(p []byte) (int, error) {
	s.partial = append(s.partial, p...)
	for {
		nl := bytes.IndexByte(s.partial, '\n')
		if nl < 0 {
			break
		}
		line := string(s.partial[:nl])
		s.partial = s.partial[nl+1:]
		s.log.add(line)
		if level, msg, ok := parseRecord(line); ok && !strings.HasPrefix(level, "DEBUG") {
			s.log.count(msg)
		}
	}
	return len(p), nil
}

// parseRecord returns the level and message of a line written by slog's
// text handler (time=… level=INFO msg="catalogd started" member=m0 …).
func parseRecord(line string) (level, msg string, ok bool) {
	rest := line
	var haveLevel bool
	for rest != "" {
		key, after, found := strings.Cut(rest, "=")
		if !found || strings.ContainsAny(key, " \"") {
			return "", "", false
		}
		var value string
		if strings.HasPrefix(after, `"`) {
			quoted, err := strconv.QuotedPrefix(after)
			if err != nil {
				return "", "", false
			}
			if value, err = strconv.Unquote(quoted); err != nil {
				return "", "", false
			}
			rest = after[len(quoted):]
		} else {
			value, rest, _ = strings.Cut(after, " ")
		}
		switch key {
		case "level":
			level, haveLevel = value, true
		case "msg":
			return level, value, haveLevel
		}
		rest = strings.TrimLeft(rest, " ")
	}
	return "", "", false
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
