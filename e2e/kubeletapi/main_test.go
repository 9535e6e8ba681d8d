package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// fixture writes a pod record, a container state and one log per run.
func fixture(t *testing.T, st containerState, logs ...string) *node {
	t.Helper()
	dir := t.TempDir()
	rec := podRecord{UID: "u1", Namespace: "ns", Name: "p", IPs: []string{"10.244.1.5"}}
	write := func(p string, v any) {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "ns_p.json"), rec)
	write(filepath.Join(dir, "u1", "containers", "c.json"), st)
	for i, l := range logs {
		p := filepath.Join(dir, "u1", "logs", "c", strconv.Itoa(i)+".log")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(l), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &node{podsDir: dir}
}

func getLogs(n *node, pod, query string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/containerLogs/ns/"+pod+"/c?"+query, nil)
	r.SetPathValue("ns", "ns")
	r.SetPathValue("pod", pod)
	r.SetPathValue("container", "c")
	w := httptest.NewRecorder()
	n.containerLogs(w, r)
	return w
}

func TestLogsOfTheCurrentAndThePreviousRun(t *testing.T) {
	n := fixture(t, containerState{Pid: 1, Restarts: 1, Running: true}, "first run\n", "a\nb\nc\n")
	cases := []struct {
		query string
		code  int
		body  string
	}{
		{"", 200, "a\nb\nc\n"},
		{"previous=true", 200, "first run\n"},
		{"tailLines=2", 200, "b\nc\n"},
		{"tailLines=0", 200, ""},
		{"tailLines=9", 200, "a\nb\nc\n"},
		{"limitBytes=3", 200, "a\nb"},
		{"tailLines=x", 400, "tailLines"},
	}
	for _, c := range cases {
		w := getLogs(n, "p", c.query)
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.body) || (c.code == 200 && w.Body.String() != c.body) {
			t.Errorf("%q: got %d %q, want %d %q", c.query, w.Code, w.Body.String(), c.code, c.body)
		}
	}
}

func TestLogsRefuseWhatDoesNotExist(t *testing.T) {
	n := fixture(t, containerState{Pid: 1, Restarts: 0, Running: true}, "only\n")
	if w := getLogs(n, "p", "previous=true"); w.Code != 400 || !strings.Contains(w.Body.String(), "previous terminated container") {
		t.Errorf("previous of a first run: %d %q", w.Code, w.Body.String())
	}
	if w := getLogs(n, "nosuch", ""); w.Code != 404 {
		t.Errorf("unknown pod: %d %q", w.Code, w.Body.String())
	}
}

func TestFollowEndsWhenTheRunEnds(t *testing.T) {
	n := fixture(t, containerState{Pid: 1, Restarts: 0, Running: true}, "one\n")
	logFile := filepath.Join(n.podsDir, "u1", "logs", "c", "0.log")
	go func() {
		time.Sleep(300 * time.Millisecond)
		f, _ := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
		_, _ = f.WriteString("two\n")
		_ = f.Close()
		time.Sleep(300 * time.Millisecond)
		data, _ := json.Marshal(containerState{Pid: 1, Restarts: 0, Running: false})
		_ = os.WriteFile(filepath.Join(n.podsDir, "u1", "containers", "c.json"), data, 0o644)
	}()
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- getLogs(n, "p", "follow=true") }()
	select {
	case w := <-done:
		if w.Body.String() != "one\ntwo\n" {
			t.Errorf("followed %q", w.Body.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end with the run")
	}
}

func TestTailOffset(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("1\n22\n333\n")
	for n, want := range map[int64]int64{1: 5, 2: 2, 3: 0, 4: 0} {
		got, err := tailOffset(f, n)
		if err != nil || got != want {
			t.Errorf("tail %d: got %d (%v), want %d", n, got, err, want)
		}
	}
}

type closer struct{ bytes.Buffer }

func (*closer) Close() error { return nil }

// An executor whose container is the test's own process: exec enters the target's namespaces
// with nsenter, and entering one's own needs root too.
func selfExecutor(t *testing.T) executor {
	if os.Geteuid() != 0 {
		t.Skip("needs root (nsenter)")
	}
	n := fixture(t, containerState{Pid: os.Getpid(), Restarts: 0, Running: true})
	rec, err := n.pod("ns", "p")
	if err != nil {
		t.Fatal(err)
	}
	return executor{n, rec}
}

func TestExecCarriesStreamsAndTheExitCode(t *testing.T) {
	exe := selfExecutor(t)
	var out, errw closer
	err := exe.ExecInContainer(context.Background(), "p", "u1", "c",
		[]string{"/bin/sh", "-c", "echo out; echo err >&2; cat; exit 3"},
		strings.NewReader("in\n"), &out, &errw, false, nil, 0)
	var code utilexec.CodeExitError
	if !errors.As(err, &code) || code.ExitStatus() != 3 {
		t.Fatalf("exit: %v", err)
	}
	if out.String() != "out\nin\n" || errw.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errw.String())
	}
	err = exe.ExecInContainer(context.Background(), "p", "u1", "c",
		[]string{"/no/such/program"}, nil, &out, &errw, false, nil, 0)
	if !errors.As(err, &code) || code.ExitStatus() != 127 {
		t.Errorf("a missing program: %v", err)
	}
}

// With a terminal (kubectl exec -it): the command's stdin and stdout are a terminal of the size the
// client asked for, input is echoed by it, stderr arrives merged, and the exit code still travels.
func TestExecWithATerminal(t *testing.T) {
	exe := selfExecutor(t)
	resize := make(chan remotecommand.TerminalSize, 1)
	resize <- remotecommand.TerminalSize{Width: 91, Height: 17}
	close(resize)
	in, feed := io.Pipe()
	go func() {
		// After the size is set: the command reads a line before it reports.
		time.Sleep(200 * time.Millisecond)
		_, _ = feed.Write([]byte("hello\n"))
	}()
	var out closer
	err := exe.ExecInContainer(context.Background(), "p", "u1", "c",
		[]string{"/bin/sh", "-c", "read line; test -t 0 && test -t 1 && echo \"tty $(stty size) $line\"; echo err >&2; exit 4"},
		in, &out, nil, true, resize, 0)
	var code utilexec.CodeExitError
	if !errors.As(err, &code) || code.ExitStatus() != 4 {
		t.Fatalf("exit: %v (output %q)", err, out.String())
	}
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	if got != "hello\ntty 17 91 hello\nerr\n" {
		t.Errorf("terminal output %q", got)
	}
}
