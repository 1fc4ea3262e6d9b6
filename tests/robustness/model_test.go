package robustness

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op builds a hand-made history entry.
func op(client int, call, ret int64, in input, out output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func putIn(key, value string) input { return input{Kind: opPut, Key: key, Value: value} }
func getIn(key string) input        { return input{Kind: opGet, Key: key} }
func deleteIn(key string) input     { return input{Kind: opDelete, Key: key} }
func casIn(key, expect, value string) input {
	return input{Kind: opCAS, Key: key, Expect: expect, Value: value}
}
func casAbsentIn(key, value string) input {
	return input{Kind: opCAS, Key: key, ExpectAbsent: true, Value: value}
}

func wrote(rev int64) output { return output{Outcome: outcomeOK, Revision: rev} }
func read(value string, mod, rev int64) output {
	return output{Outcome: outcomeOK, Found: true, Value: value, ModRevision: mod, Revision: rev}
}
func readAbsent(rev int64) output { return output{Outcome: outcomeOK, Revision: rev} }
func casOK(rev int64) output      { return output{Outcome: outcomeOK, Succeeded: true, Revision: rev} }
func casFailed(rev int64) output  { return output{Outcome: outcomeOK, Revision: rev} }
func deleted(n, rev int64) output { return output{Outcome: outcomeOK, Deleted: n, Revision: rev} }

var (
	unknown    = output{Outcome: outcomeUnknown, Err: "context deadline exceeded"}
	notApplied = output{Outcome: outcomeNotApplied, Err: "no leader"}
)

// never is the return time of an operation of unknown outcome in these
// hand-made histories: after everything else.
const never = 1000

func TestModel(t *testing.T) {
	tests := []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{
			name: "linearizable: concurrent writers, readers, cas, delete, two keys",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(1, 2, 12, putIn("b", "c1-1"), wrote(2)),
				// Concurrent with both puts: may see either state of a.
				op(2, 1, 11, getIn("a"), readAbsent(0)),
				op(0, 20, 30, casIn("a", "c0-1", "c0-2"), casOK(3)),
				// Overlaps the cas: sees the value before it.
				op(1, 21, 31, getIn("a"), read("c0-1", 1, 2)),
				op(2, 32, 40, casIn("a", "c0-1", "c2-1"), casFailed(3)),
				op(1, 41, 50, deleteIn("a"), deleted(1, 4)),
				op(2, 51, 60, deleteIn("a"), deleted(0, 4)),
				op(0, 61, 70, casAbsentIn("a", "c0-3"), casOK(5)),
				op(1, 71, 80, getIn("b"), read("c1-1", 2, 5)),
				op(2, 71, 80, getIn("a"), read("c0-3", 5, 5)),
			},
			want: porcupine.Ok,
		},
		{
			name: "linearizable: a write of unknown outcome that took effect",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(1, 5, never, putIn("a", "c1-1"), unknown),
				op(2, 20, 30, getIn("a"), read("c1-1", 2, 2)),
				op(0, 40, 50, putIn("a", "c0-2"), wrote(3)),
			},
			want: porcupine.Ok,
		},
		{
			// Seen in a kill-all run: the revision a reader learns for a
			// write of unknown outcome is bounded by what was observed before
			// that write, not by what was observed after it.
			name: "linearizable: a write of unknown outcome observed by a failed cas before a read learns its revision",
			history: []porcupine.Operation{
				op(0, 0, 10, getIn("a"), readAbsent(421)),
				op(1, 11, never, casAbsentIn("a", "c1-1"), unknown),
				op(2, 20, 30, casAbsentIn("a", "c2-1"), casFailed(430)),
				op(3, 31, 40, getIn("a"), read("c1-1", 425, 430)),
			},
			want: porcupine.Ok,
		},
		{
			name: "a read reports a write of unknown outcome at a revision older than one observed before it",
			history: []porcupine.Operation{
				op(0, 0, 10, getIn("a"), readAbsent(421)),
				op(1, 11, never, putIn("a", "c1-1"), unknown),
				op(3, 31, 40, getIn("a"), read("c1-1", 420, 430)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "linearizable: a write of unknown outcome that never took effect",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(1, 5, never, deleteIn("a"), unknown),
				op(2, 20, 30, getIn("a"), read("c0-1", 1, 1)),
			},
			want: porcupine.Ok,
		},
		{
			name: "linearizable: a write the server did not apply",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(1, 11, 20, putIn("a", "c1-1"), notApplied),
				op(2, 21, 30, getIn("a"), read("c0-1", 1, 1)),
			},
			want: porcupine.Ok,
		},
		{
			name: "stale read: a get after an acknowledged overwrite returns the old value",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(0, 11, 20, putIn("a", "c0-2"), wrote(2)),
				op(1, 21, 30, getIn("a"), read("c0-1", 1, 1)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "stale read: the right value at a revision older than one already seen",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(1, 11, 20, getIn("a"), read("c0-1", 1, 7)),
				op(2, 21, 30, getIn("a"), read("c0-1", 1, 3)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "lost write: an acknowledged put is gone",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(1, 20, 30, getIn("a"), readAbsent(1)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "lost write: an acknowledged delete is undone",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(0, 11, 20, deleteIn("a"), deleted(1, 2)),
				op(1, 21, 30, getIn("a"), read("c0-1", 1, 2)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "a write the server said it did not apply is read",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), notApplied),
				op(1, 20, 30, getIn("a"), read("c0-1", 1, 1)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "a cas fails although its compare held",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
				op(1, 20, 30, casIn("a", "c0-1", "c1-1"), casFailed(1)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "two acknowledged writes of one key report revisions out of order",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(5)),
				op(0, 11, 20, putIn("a", "c0-2"), wrote(4)),
			},
			want: porcupine.Illegal,
		},
		{
			name: "a read reports a mod revision other than the write's",
			history: []porcupine.Operation{
				op(0, 0, 10, putIn("a", "c0-1"), wrote(5)),
				op(1, 11, 20, getIn("a"), read("c0-1", 4, 5)),
			},
			want: porcupine.Illegal,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, info := porcupine.CheckOperationsVerbose(kvModel, tt.history, 10*time.Second)
			if got != tt.want {
				t.Fatalf("check = %s, want %s", got, tt.want)
			}
			var html bytes.Buffer
			if err := porcupine.Visualize(kvModel, info, &html); err != nil {
				t.Fatalf("visualize: %v", err)
			}
			// The page embeds the descriptions as JSON, which escapes '>'.
			first := tt.history[0]
			want := describeOperation(first.Input.(input), first.Output.(output))
			quoted, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(html.String(), string(quoted)) {
				t.Errorf("visualization does not describe the first operation as %s", quoted)
			}
		})
	}
}

// TestModelEvents checks the event form of the model (PartitionEvent) on
// the same kind of history: the key of a return event comes from its call.
func TestModelEvents(t *testing.T) {
	call := func(client, id int, in input) porcupine.Event {
		return porcupine.Event{ClientId: client, Kind: porcupine.CallEvent, Value: in, Id: id}
	}
	ret := func(client, id int, out output) porcupine.Event {
		return porcupine.Event{ClientId: client, Kind: porcupine.ReturnEvent, Value: out, Id: id}
	}
	ok := []porcupine.Event{
		call(0, 0, putIn("a", "c0-1")),
		call(1, 1, putIn("b", "c1-1")),
		ret(0, 0, wrote(1)),
		ret(1, 1, wrote(2)),
		call(0, 2, getIn("a")),
		call(1, 3, getIn("b")),
		ret(1, 3, read("c1-1", 2, 2)),
		ret(0, 2, read("c0-1", 1, 2)),
	}
	if !porcupine.CheckEvents(kvModel, ok) {
		t.Errorf("linearizable event history reported illegal")
	}
	lost := []porcupine.Event{
		call(0, 0, putIn("a", "c0-1")),
		ret(0, 0, wrote(1)),
		call(1, 1, getIn("a")),
		ret(1, 1, readAbsent(1)),
	}
	if porcupine.CheckEvents(kvModel, lost) {
		t.Errorf("event history with a lost write reported linearizable")
	}
	if parts := partitionEventsByKey(ok); len(parts) != 2 || len(parts[0]) != 4 || len(parts[1]) != 4 {
		t.Errorf("partitionEventsByKey gave %d partitions (sizes %v), want 2 of 4 events", len(parts), partSizes(parts))
	}
}

func partSizes(parts [][]porcupine.Event) []int {
	sizes := make([]int, len(parts))
	for i, p := range parts {
		sizes[i] = len(p)
	}
	return sizes
}

// TestHistoryUnknownReturn checks how a recorded history closes operations
// of unknown outcome: at the first observer of the value written, else after
// the end of the history.
func TestHistoryUnknownReturn(t *testing.T) {
	h := newHistory()
	r := h.recorder()
	r.record(h.now(), putIn("a", "c0-1"), unknown)
	r.record(h.now(), putIn("a", "c0-2"), unknown)
	r.record(h.now(), deleteIn("a"), unknown)
	r2 := h.recorder()
	r2.record(h.now(), getIn("a"), read("c0-1", 1, 1))
	ops := h.operations()
	var observer int64
	for _, o := range ops {
		if o.Input.(input).Kind == opGet {
			observer = o.Return
		}
	}
	// The get is the last event of the history, so the end is its return.
	end := observer
	var streams []int
	for _, o := range ops {
		streams = append(streams, o.ClientId)
		in := o.Input.(input)
		switch {
		case in.Kind == opPut && in.Value == "c0-1":
			if o.Return != observer {
				t.Errorf("observed unknown put returns at %d, want its observer's return %d", o.Return, observer)
			}
		case in.Kind != opGet:
			if want := end + unknownReturnGap.Nanoseconds(); o.Return != want {
				t.Errorf("unobserved unknown %v returns at %d, want %d (end of history + gap)", in.Kind, o.Return, want)
			}
		}
	}
	// The first recorder changed streams after each unknown operation.
	seen := map[int]bool{}
	for _, s := range streams {
		seen[s] = true
	}
	if len(seen) != 4 {
		t.Errorf("operations use client ids %v, want 4 distinct (3 unknown writes of one client, 1 reader)", streams)
	}
	if n := h.counts(); n[outcomeUnknown] != 3 || n[outcomeOK] != 1 {
		t.Errorf("counts = %v, want 3 unknown and 1 ok", n)
	}
}

// TestHistoryFile checks that a saved history reads back as the same
// operations, so TestRecheckHistory checks what the run checked.
func TestHistoryFile(t *testing.T) {
	ops := []porcupine.Operation{
		op(0, 0, 10, putIn("a", "c0-1"), wrote(1)),
		op(1, 5, never, casIn("a", "c0-1", "c1-1"), unknown),
		op(2, 20, 30, getIn("a"), read("c1-1", 2, 2)),
	}
	path := filepath.Join(t.TempDir(), "history.json")
	if err := saveHistory(path, ops); err != nil {
		t.Fatal(err)
	}
	got, err := loadHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ops) {
		t.Errorf("read back %+v, want %+v", got, ops)
	}
}
