package framework

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/catalogd/catalogd/api/catalogpb"
	"github.com/catalogd/catalogd/sdk"
	"github.com/catalogd/catalogd/server"
)

const (
	// processStartWait bounds how long a started process may take to answer
	// Status with its raft id; a joining member fetches the cluster's data first.
	processStartWait = 30 * time.Second
	// processStopWait is how long a process may take to stop after SIGTERM
	// (a leader hands over first) before it gets SIGKILL.
	processStopWait = 15 * time.Second
	// statusCallTimeout bounds one Status call to a member process, so a
	// paused or cut-off member cannot hold up a caller that polls others too.
	statusCallTimeout = 2 * time.Second
	// binEnv names a prebuilt catalogd binary to run instead of building one.
	binEnv = "CATALOGD_TEST_BIN"
	// binDirPrefix starts the name of the temporary dir of a built binary,
	// followed by the pid of the test binary that built it.
	binDirPrefix = "catalogd-test-bin-"
)

// catalogdBuild is the catalogd binary of this test binary, built once.
var catalogdBuild struct {
	once sync.Once
	path string
	err  error
}

// catalogdBinary returns the absolute path of the catalogd binary member
// processes run: $CATALOGD_TEST_BIN if set, else ./cmd/catalogd of the module
// the test runs in, built once per test binary.
func catalogdBinary() (string, error) {
	catalogdBuild.once.Do(func() {
		path, err := findOrBuildCatalogd()
		if err == nil {
			path, err = filepath.EvalSymlinks(path)
		}
		if err == nil {
			path, err = filepath.Abs(path)
		}
		catalogdBuild.path, catalogdBuild.err = path, err
	})
	return catalogdBuild.path, catalogdBuild.err
}

func findOrBuildCatalogd() (string, error) {
	if path := os.Getenv(binEnv); path != "" {
		fi, err := os.Stat(path)
		if err != nil {
			return "", fmt.Errorf("$%s: %w", binEnv, err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("$%s=%s is not an executable file", binEnv, path)
		}
		return path, nil
	}
	removeStaleBinDirs()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root with `go env GOMOD`: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("the test's working dir is not inside a Go module (go env GOMOD = %q): cannot build cmd/catalogd; set $%s", gomod, binEnv)
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", binDirPrefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "catalogd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/catalogd")
	build.Dir = filepath.Dir(gomod)
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build ./cmd/catalogd in %s: %v\n%s", build.Dir, err, out)
	}
	return bin, nil
}

// staleBinDir matches the dirs of built binaries and captures the pid of the
// test binary that built them.
var staleBinDir = regexp.MustCompile(`^` + binDirPrefix + `(\d+)-`)

// removeStaleBinDirs removes the binaries built by test binaries that no
// longer run (a test binary cannot remove its own: nothing runs after its
// last test).
func removeStaleBinDirs() {
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		m := staleBinDir.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if pid, err := strconv.Atoi(m[1]); err == nil && pid != os.Getpid() && !processAlive(pid) {
			os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
		}
	}
}

// processLauncher runs members as catalogd processes.
type processLauncher struct {
	bin string
	// report is told when a process that started well exits without being
	// asked to, and when one had to be killed because it did not stop.
	report func(index int, what string)
}

func (p *processLauncher) launch(ctx context.Context, spec memberSpec) (member, error) {
	argv := append(append([]string(nil), spec.netns...), p.bin)
	argv = append(argv, spec.flags()...)
	status, err := sdk.New(sdk.Config{Endpoints: []string{spec.clientAddr}, DialTimeout: time.Second, MaxRetries: -1})
	if err != nil {
		return nil, fmt.Errorf("status client of member %s: %w", spec.name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	out := spec.log.output()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = memberSysProcAttr()
	spec.log.add(startMarker + strings.Join(argv, " "))
	if err := cmd.Start(); err != nil {
		status.Close()
		return nil, fmt.Errorf("start member %s: %w", spec.name, err)
	}
	m := &processMember{spec: spec, cmd: cmd, status: status, report: p.report, donec: make(chan struct{})}
	go m.wait()
	if err := m.awaitStart(ctx, p.bin); err != nil {
		m.kill()
		return nil, err
	}
	return m, nil
}

// startMarker starts the line a member's log gets before each start of its
// process.
const startMarker = "framework: exec "

// A processMember is one catalogd process.
type processMember struct {
	spec     memberSpec
	cmd      *exec.Cmd
	status   *sdk.Client
	memberID uint64
	report   func(index int, what string)
	donec    chan struct{} // closed once the process has exited

	mu         sync.Mutex
	started    bool // it answered Status: an exit from now on is reported
	expected   bool // stop or kill asked for the exit
	paused     bool
	exitStatus string
}

// wait reaps the process and reports an exit nobody asked for.
func (m *processMember) wait() {
	status := "exit status 0"
	if err := m.cmd.Wait(); err != nil {
		status = err.Error()
	}
	m.mu.Lock()
	m.exitStatus = status
	report := m.started && !m.expected
	m.mu.Unlock()
	m.spec.log.add(fmt.Sprintf("framework: process %d exited: %s", m.cmd.Process.Pid, status))
	close(m.donec)
	if report {
		m.report(m.spec.index, fmt.Sprintf("member %d (%s) exited unexpectedly: %s", m.spec.index, m.spec.name, status))
	}
}

// awaitStart waits until the process answers Status with its id, and checks
// that the process started is catalogd itself, not a wrapper that would get
// the signals meant for catalogd.
func (m *processMember) awaitStart(ctx context.Context, bin string) error {
	ctx, cancel := context.WithTimeout(ctx, processStartWait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := m.statusOnce(ctx)
		if err == nil && st.GetHeader().GetMemberId() != 0 {
			m.memberID = st.GetHeader().GetMemberId()
			break
		}
		if err == nil {
			err = errors.New("its status reports member id 0")
		}
		select {
		case <-m.donec:
			return m.startError()
		case <-ctx.Done():
			return fmt.Errorf("member %s (pid %d) did not answer Status on %s within %v: %w", m.spec.name, m.cmd.Process.Pid, m.spec.clientAddr, processStartWait, err)
		case <-tick.C:
		}
	}
	pid := m.cmd.Process.Pid
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe != bin {
		return fmt.Errorf("member %s: process %d runs %s, not %s: signals would not reach catalogd", m.spec.name, pid, exe, bin)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.exitStatus != "" {
		return fmt.Errorf("member %s exited right after it started: %s", m.spec.name, m.exitStatus)
	}
	m.started = true
	return nil
}

// startError describes a process that exited while starting, with the lines
// it printed; a taken address is reported as server.ErrAddrInUse.
func (m *processMember) startError() error {
	lines := m.spec.log.tail()
	for k := len(lines) - 1; k >= 0; k-- {
		if strings.HasPrefix(lines[k], startMarker) {
			lines = lines[k+1:]
			break
		}
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	m.mu.Lock()
	status := m.exitStatus
	m.mu.Unlock()
	output := strings.Join(lines, " | ")
	if strings.Contains(output, "address already in use") {
		return fmt.Errorf("member %s exited while starting (%s): %s: %w", m.spec.name, status, output, server.ErrAddrInUse)
	}
	return fmt.Errorf("member %s exited while starting (%s): %s", m.spec.name, status, output)
}

func (m *processMember) statusOnce(ctx context.Context) (*catalogpb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, statusCallTimeout)
	defer cancel()
	return m.status.Cluster().Status(ctx, &catalogpb.StatusRequest{})
}

func (m *processMember) id() uint64 { return m.memberID }

func (m *processMember) leader(ctx context.Context) (uint64, error) {
	st, err := m.statusOnce(ctx)
	if err != nil {
		return 0, err
	}
	return st.GetLeader(), nil
}

func (m *processMember) alive() bool {
	select {
	case <-m.donec:
		return false
	default:
		return true
	}
}

// signal sends sig; a process that has exited already is no error.
func (m *processMember) signal(sig syscall.Signal) {
	_ = m.cmd.Process.Signal(sig)
}

// stop sends SIGTERM (catalogd's graceful stop) and waits for the exit; a
// process that does not stop in time is killed and reported.
func (m *processMember) stop(context.Context) {
	m.mu.Lock()
	m.expected = true
	paused := m.paused
	m.paused = false
	m.mu.Unlock()
	m.signal(syscall.SIGTERM)
	if paused {
		m.signal(syscall.SIGCONT)
	}
	select {
	case <-m.donec:
	case <-time.After(processStopWait):
		m.report(m.spec.index, fmt.Sprintf("member %d (%s) did not stop within %v of SIGTERM; killed it", m.spec.index, m.spec.name, processStopWait))
		m.signal(syscall.SIGKILL)
		<-m.donec
	}
	m.status.Close()
}

// kill sends SIGKILL and waits for the exit.
func (m *processMember) kill() {
	m.mu.Lock()
	m.expected = true
	m.paused = false
	m.mu.Unlock()
	m.signal(syscall.SIGKILL)
	<-m.donec
	m.status.Close()
}

// pause freezes the process (SIGSTOP): its sockets stay open, nothing
// answers. It returns once every thread has stopped: a thread that was
// waiting for a CPU stops only when it next runs, and could answer a request
// sent after SIGSTOP until then.
func (m *processMember) pause() error {
	m.mu.Lock()
	m.signal(syscall.SIGSTOP)
	m.paused = true
	m.mu.Unlock()
	pid := m.cmd.Process.Pid
	deadline := time.Now().Add(pauseWait)
	for {
		running, err := runningThreads(pid)
		if err != nil || running == 0 {
			// Without /proc there is nothing to wait on; an exited process
			// does not answer either.
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("member %s (pid %d): %d threads still run %v after SIGSTOP", m.spec.name, pid, running, pauseWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pauseWait bounds the wait for a paused process's threads to stop; a thread
// in an uninterruptible system call (an fsync) stops when it returns.
const pauseWait = 10 * time.Second

// runningThreads returns how many threads of process pid are not stopped,
// from the state letter of /proc/<pid>/task/<tid>/stat.
func runningThreads(pid int) (int, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	running := 0
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// "pid (comm) state ..."; comm may hold spaces and parentheses.
		k := strings.LastIndex(string(stat), ") ")
		if k < 0 || k+2 >= len(stat) {
			continue
		}
		switch stat[k+2] {
		case 'T', 't', 'Z', 'X':
		default:
			running++
		}
	}
	return running, nil
}

// resume lets a paused process run again (SIGCONT).
func (m *processMember) resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.signal(syscall.SIGCONT)
	m.paused = false
}

func (m *processMember) isPaused() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.paused
}
