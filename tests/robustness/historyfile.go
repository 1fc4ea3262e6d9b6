package robustness

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/anishathalye/porcupine"
)

// A savedOp is one operation of a history file: porcupine's operation with
// the model's concrete input and output types.
type savedOp struct {
	ClientID int    `json:"client"`
	Call     int64  `json:"call"`
	Return   int64  `json:"return"`
	Input    input  `json:"input"`
	Output   output `json:"output"`
}

// saveHistory writes ops to path as JSON, for checking the same history
// again (TestRecheckHistory) after changing the model.
func saveHistory(path string, ops []porcupine.Operation) error {
	saved := make([]savedOp, len(ops))
	for k, op := range ops {
		saved[k] = savedOp{ClientID: op.ClientId, Call: op.Call, Return: op.Return, Input: op.Input.(input), Output: op.Output.(output)}
	}
	data, err := json.Marshal(saved)
	if err != nil {
		return fmt.Errorf("encode history: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	return nil
}

// loadHistory reads a history written by saveHistory.
func loadHistory(path string) ([]porcupine.Operation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	var saved []savedOp
	if err := json.Unmarshal(data, &saved); err != nil {
		return nil, fmt.Errorf("decode history %s: %w", path, err)
	}
	ops := make([]porcupine.Operation, len(saved))
	for k, s := range saved {
		ops[k] = porcupine.Operation{ClientId: s.ClientID, Call: s.Call, Return: s.Return, Input: s.Input, Output: s.Output}
	}
	return ops, nil
}
