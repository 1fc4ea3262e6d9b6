package framework

import (
	"strings"
	"testing"
)

func TestMemberLog(t *testing.T) {
	l := newMemberLog()
	lg := l.logger().With("member", "m0")
	lg.Debug("below the level")
	for range memberLogLines + 5 {
		lg.Info("tick", "n", 1)
	}
	lg.WithGroup("g").Warn("restored snapshot", "index", 7)

	if got := l.logged("restored snapshot"); got != 1 {
		t.Errorf(`logged("restored snapshot") = %d, want 1 (records from derived loggers count)`, got)
	}
	if got := l.logged("tick"); got != memberLogLines+5 {
		t.Errorf(`logged("tick") = %d, want %d`, got, memberLogLines+5)
	}
	if got := l.logged("below the level"); got != 0 {
		t.Errorf("a Debug record was counted %d times; only Info and above are kept", got)
	}
	tail := l.tail()
	if len(tail) != memberLogLines {
		t.Fatalf("tail has %d lines, want the last %d", len(tail), memberLogLines)
	}
	if last := tail[len(tail)-1]; !strings.Contains(last, "restored snapshot") || !strings.Contains(last, "member=m0") {
		t.Errorf("last line %q, want the last record with its attributes", last)
	}
}

func TestParseRecord(t *testing.T) {
	for _, tc := range []struct {
		line       string
		level, msg string
		ok         bool
	}{
		{`time=2026-11-21T22:49:28.123Z level=INFO msg="catalogd started" member=m0 id=1f`, "INFO", "catalogd started", true},
		{`time=2026-11-21T22:49:28.123Z level=WARN msg=stopped member=m0`, "WARN", "stopped", true},
		{`time=2026-11-21T22:49:28.123Z level=ERROR msg="say \"hi\" = x" err="a b"`, "ERROR", `say "hi" = x`, true},
		{`time=2026-11-21T22:49:28.123Z level=INFO msg=`, "INFO", "", true},
		{`catalogd: --client-addr 127.0.0.1:1: address already in use`, "", "", false},
		{`panic: runtime error: index out of range [3] with length 3`, "", "", false},
		{`goroutine 1 [running]:`, "", "", false},
		{`msg="no level"`, "", "no level", false},
		{``, "", "", false},
	} {
		level, msg, ok := parseRecord(tc.line)
		if level != tc.level || msg != tc.msg || ok != tc.ok {
			t.Errorf("parseRecord(%q) = %q, %q, %v; want %q, %q, %v", tc.line, level, msg, ok, tc.level, tc.msg, tc.ok)
		}
	}
}

func TestProcessOutput(t *testing.T) {
	l := newMemberLog()
	w := l.output()
	// A process's output arrives in arbitrary pieces.
	for _, piece := range []string{
		`time=t level=INFO msg="restored `, "snapshot\" index=7\ntime=t level=DEBUG msg=\"restored snapshot\"\n",
		"catalogd: one line error\n", `time=t level=INFO msg="restored snapshot"`,
	} {
		if _, err := w.Write([]byte(piece)); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.logged("restored snapshot"); got != 1 {
		t.Errorf(`logged("restored snapshot") = %d, want 1 (debug records and unfinished lines are not counted)`, got)
	}
	if tail := l.tail(); len(tail) != 3 || tail[2] != "catalogd: one line error" {
		t.Errorf("tail = %q, want the 3 complete lines", tail)
	}
}
