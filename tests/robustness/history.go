package robustness

import (
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// unknownReturnGap is how far after the last recorded event an operation of
// unknown outcome "returns": it may take effect at any point after its call,
// including after every other operation (etcd's robustness tests use the
// same idiom: porcupine has no notion of an operation that never returns).
const unknownReturnGap = time.Second

// A history is the operations of one run, recorded by many clients. Times
// are nanoseconds since the history's base, read from Go's monotonic clock.
type history struct {
	base time.Time

	mu      sync.Mutex
	streams int
	done    []porcupine.Operation
	// unknown holds operations whose outcome is unknown; their Return is set
	// by operations().
	unknown []porcupine.Operation
}

func newHistory() *history { return &history{base: time.Now()} }

// now returns the current time on the history's clock.
func (h *history) now() int64 { return time.Since(h.base).Nanoseconds() }

// A recorder records the operations of one client, which runs one operation
// at a time.
type recorder struct {
	h *history
	// stream is the porcupine client id of the next operation. A client gets
	// a fresh one after an operation of unknown outcome, because that
	// operation's interval stays open to the end of the history and porcupine
	// draws one client's operations on one line.
	stream int
}

func (h *history) recorder() *recorder {
	return &recorder{h: h, stream: h.newStream()}
}

func (h *history) newStream() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.streams
	h.streams++
	return s
}

// record adds an operation called at call (h.now() before sending it) with
// its outcome.
func (r *recorder) record(call int64, in input, out output) {
	op := porcupine.Operation{ClientId: r.stream, Input: in, Call: call, Output: out, Return: r.h.now()}
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	if out.Outcome != outcomeUnknown {
		r.h.done = append(r.h.done, op)
		return
	}
	r.h.unknown = append(r.h.unknown, op)
	r.stream = r.h.streams
	r.h.streams++
}

// operations returns the history for porcupine. An operation of unknown
// outcome returns unknownReturnGap after the last event, unless some
// operation observed the value it wrote: values are unique, so the write
// took effect before the first such observer returned, and its interval ends
// there. That only narrows what the history allows to what it already
// implied, and keeps the checker from trying those writes everywhere.
func (h *history) operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	var end int64
	observed := map[string]int64{} // value -> earliest return of an observer
	observe := func(value string, at int64) {
		if first, ok := observed[value]; !ok || at < first {
			observed[value] = at
		}
	}
	for _, op := range h.done {
		end = max(end, op.Return)
		in, out := op.Input.(input), op.Output.(output)
		if out.Outcome != outcomeOK {
			continue
		}
		switch {
		case in.Kind == opGet && out.Found:
			observe(out.Value, op.Return)
		case in.Kind == opCAS && out.Succeeded && !in.ExpectAbsent:
			observe(in.Expect, op.Return)
		}
	}
	for _, op := range h.unknown {
		end = max(end, op.Call)
	}
	ops := make([]porcupine.Operation, 0, len(h.done)+len(h.unknown))
	ops = append(ops, h.done...)
	for _, op := range h.unknown {
		op.Return = end + unknownReturnGap.Nanoseconds()
		if in := op.Input.(input); in.Kind == opPut || in.Kind == opCAS || in.Kind == opFenced {
			if at, ok := observed[in.Value]; ok && at >= op.Call {
				op.Return = at
			}
		}
		ops = append(ops, op)
	}
	return ops
}

// counts returns how many operations the history holds per outcome.
func (h *history) counts() map[outcome]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := map[outcome]int{outcomeUnknown: len(h.unknown)}
	for _, op := range h.done {
		n[op.Output.(output).Outcome]++
	}
	return n
}
