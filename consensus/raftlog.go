package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// raftLogger adapts a slog.Logger to raft's Logger interface.
type raftLogger struct{ lg *slog.Logger }

func (l raftLogger) Debug(v ...any)                 { l.lg.Debug(fmt.Sprint(v...)) }
func (l raftLogger) Debugf(format string, v ...any) { l.lg.Debug(fmt.Sprintf(format, v...)) }
func (l raftLogger) Info(v ...any)                  { l.lg.Info(fmt.Sprint(v...)) }
func (l raftLogger) Infof(format string, v ...any)  { l.lg.Info(fmt.Sprintf(format, v...)) }
func (l raftLogger) Warning(v ...any)               { l.lg.Warn(fmt.Sprint(v...)) }
func (l raftLogger) Warningf(format string, v ...any) {
	l.lg.Warn(fmt.Sprintf(format, v...))
}
func (l raftLogger) Error(v ...any)                 { l.lg.Error(fmt.Sprint(v...)) }
func (l raftLogger) Errorf(format string, v ...any) { l.lg.Error(fmt.Sprintf(format, v...)) }

// Fatal and Panic mean raft found its invariants broken; it expects not to return.
func (l raftLogger) Fatal(v ...any) { l.fatal(fmt.Sprint(v...)) }
func (l raftLogger) Fatalf(format string, v ...any) {
	l.fatal(fmt.Sprintf(format, v...))
}
func (l raftLogger) Panic(v ...any) { l.panic(fmt.Sprint(v...)) }
func (l raftLogger) Panicf(format string, v ...any) {
	l.panic(fmt.Sprintf(format, v...))
}

func (l raftLogger) fatal(msg string) {
	l.lg.Log(context.Background(), slog.LevelError+4, msg)
	os.Exit(1)
}

func (l raftLogger) panic(msg string) {
	l.lg.Log(context.Background(), slog.LevelError+4, msg)
	panic(msg)
}
