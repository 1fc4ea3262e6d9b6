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
