// Command weft-kubelet-api serves, for one node of weft's local cluster, the part of the kubelet's
// API that the API server proxies to: container logs (follow, previous), exec (SPDY and WebSocket,
// stdin/stdout/stderr, exit codes) and port-forward. The streams are served by
// k8s.io/kubelet/pkg/cri/streaming, the library containerd and CRI-O serve them with.
//
// It reads what weft-nodelet writes under --pods-dir:
//
//	<ns>_<name>.json                       the pod: uid, IPs
//	<uid>/containers/<container>.json      the container's process: pid, restarts, running
//	<uid>/logs/<container>/<restart>.log   the output of each run
//
// and enters a container with nsenter(1) (its mount, network and UTS namespaces, its environment).
// Every client must present a certificate of the cluster's CA (the API server's kubelet client).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/kubelet/pkg/cri/streaming/portforward"
	remotecommandserver "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
	followPoll            = 200 * time.Millisecond
)

// podRecord is weft-nodelet's record of a running pod (e2e/src/nodelet/pods.rs, PodRecord).
type podRecord struct {
	UID       string   `json:"uid"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	IPs       []string `json:"ips"`
}

// containerState is weft-nodelet's record of a container's current run (ContainerRecord).
type containerState struct {
	Pid      int  `json:"pid"`
	Restarts int  `json:"restarts"`
	Running  bool `json:"running"`
}

type node struct{ podsDir string }

// httpError is an error with the status the kubelet answers it with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (n *node) pod(ns, name string) (*podRecord, error) {
	var rec podRecord
	data, err := os.ReadFile(filepath.Join(n.podsDir, ns+"_"+name+".json"))
	if err != nil {
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("pod %q in namespace %q is not running on this node", name, ns)}
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

func (n *node) container(rec *podRecord, container string) (*containerState, error) {
	var st containerState
	data, err := os.ReadFile(filepath.Join(n.podsDir, rec.UID, "containers", container+".json"))
	if err != nil {
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("container %q in pod %q has not run a process on this node: it has not started yet, or it has ports and no command, so the nodelet's built-in port server answers for it and there is no process to enter; exec works in containers that run a command (e.g. /agnhost pause)", container, rec.Name)}
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (n *node) logPath(rec *podRecord, container string, run int) string {
	return filepath.Join(n.podsDir, rec.UID, "logs", container, strconv.Itoa(run)+".log")
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	if errors.As(err, &he) {
		code = he.code
	}
	http.Error(w, err.Error(), code)
}

// tailOffset is where the last n lines of f begin.
func tailOffset(f *os.File, n int64) (int64, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	const chunk = 4096
	pos, lines := size, int64(0)
	buf := make([]byte, chunk)
	// A trailing newline ends the last line; it does not start another.
	skipLast := true
	for pos > 0 {
		step := int64(chunk)
		if pos < step {
			step = pos
		}
		pos -= step
		if _, err := f.ReadAt(buf[:step], pos); err != nil && err != io.EOF {
			return 0, err
		}
		for i := step - 1; i >= 0; i-- {
			if buf[i] != '\n' {
				skipLast = false
				continue
			}
			if skipLast {
				skipLast = false
				continue
			}
			lines++
			if lines == n {
				return pos + i + 1, nil
			}
		}
	}
	return 0, nil
}

// containerLogs serves GET /containerLogs/{ns}/{pod}/{container}.
func (n *node) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, name, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	q := r.URL.Query()
	follow, previous := q.Get("follow") == "true", q.Get("previous") == "true"
	rec, err := n.pod(ns, name)
	if err != nil {
		writeError(w, err)
		return
	}
	st, err := n.container(rec, container)
	if err != nil {
		writeError(w, err)
		return
	}
	run := st.Restarts
	if previous {
		run--
		if run < 0 {
			writeError(w, &httpError{http.StatusBadRequest, fmt.Sprintf("previous terminated container %q in pod %q not found", container, name)})
			return
		}
	}
	f, err := os.Open(n.logPath(rec, container, run))
	if err != nil {
		writeError(w, &httpError{http.StatusNotFound, fmt.Sprintf("no log of container %q in pod %q: %v", container, name, err)})
		return
	}
	defer f.Close()
	if t := q.Get("tailLines"); t != "" {
		lines, err := strconv.ParseInt(t, 10, 64)
		if err != nil || lines < 0 {
			writeError(w, &httpError{http.StatusBadRequest, "tailLines must be a non-negative integer"})
			return
		}
		off, err := tailOffset(f, lines)
		if err == nil && lines == 0 {
			off, err = f.Seek(0, io.SeekEnd)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			writeError(w, err)
			return
		}
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		writeError(w, err)
		return
	}
	var out io.Writer = w
	if l := q.Get("limitBytes"); l != "" {
		limit, err := strconv.ParseInt(l, 10, 64)
		if err != nil || limit < 1 {
			writeError(w, &httpError{http.StatusBadRequest, "limitBytes must be a positive integer"})
			return
		}
		out = &limitWriter{w: w, left: limit}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	for {
		_, err := io.Copy(out, f)
		if flusher != nil {
			flusher.Flush()
		}
		if err != nil || !follow || previous {
			return
		}
		// Follow the run until it ends (the process exited or a restart began) and its output is
		// all sent, or the client goes away.
		now, err := n.container(rec, container)
		if err != nil || !now.Running || now.Restarts != run {
			if _, err := io.Copy(out, f); err == nil && flusher != nil {
				flusher.Flush()
			}
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(followPoll):
		}
	}
}

type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.ErrShortWrite
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	if err == nil && l.left <= 0 {
		err = io.ErrShortWrite
	}
	return n, err
}

// executor runs commands in the containers of one pod.
type executor struct {
	n   *node
	rec *podRecord
}

func environ(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil
	}
	var env []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if len(kv) > 0 {
			env = append(env, string(kv))
		}
	}
	return env
}

// openPty opens a new pseudo-terminal pair from /dev/ptmx: the master (ours) and the slave (the
// command's stdin, stdout and stderr, and its controlling terminal).
func openPty() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(master.Fd())
	if err = unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlocking the terminal: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("naming the terminal: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// ExecInContainer implements remotecommandserver.Executor. With tty, the command gets a terminal
// of its own (a new session with the terminal as its controlling one, stderr merged into stdout as
// a kubelet does), sized and resized by the client (`kubectl exec -it`).
func (e executor) ExecInContainer(ctx context.Context, _ string, _ types.UID, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if len(cmd) == 0 {
		return fmt.Errorf("no command given")
	}
	st, err := e.n.container(e.rec, container)
	if err != nil {
		return err
	}
	if !st.Running {
		return fmt.Errorf("container %q in pod %q is not running", container, e.rec.Name)
	}
	args := append([]string{"--target", strconv.Itoa(st.Pid), "--mount", "--net", "--uts", "--"}, cmd...)
	c := exec.CommandContext(ctx, "nsenter", args...)
	c.Env = environ(st.Pid)
	var copies sync.WaitGroup
	if tty {
		master, slave, err := openPty()
		if err != nil {
			return fmt.Errorf("allocating a terminal: %w", err)
		}
		defer master.Close()
		c.Stdin, c.Stdout, c.Stderr = slave, slave, slave
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		if err := c.Start(); err != nil {
			slave.Close()
			return err
		}
		slave.Close()
		go func() {
			for size := range resize {
				_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ,
					&unix.Winsize{Row: size.Height, Col: size.Width})
			}
		}()
		if in != nil {
			go func() { _, _ = io.Copy(master, in) }()
		}
		if out != nil {
			copies.Add(1)
			go func() {
				defer copies.Done()
				// Ends with EIO once the command and everything it started have closed the slave.
				_, _ = io.Copy(out, master)
			}()
		}
	} else {
		c.Stdout, c.Stderr = out, errw
		var stdin io.WriteCloser
		if in != nil {
			if stdin, err = c.StdinPipe(); err != nil {
				return err
			}
		}
		if err := c.Start(); err != nil {
			return err
		}
		if stdin != nil {
			// Not awaited: the command may end before its input does.
			go func() {
				_, _ = io.Copy(stdin, in)
				_ = stdin.Close()
			}()
		}
	}
	err = c.Wait()
	copies.Wait()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && exitErr.ExitCode() >= 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with non-zero exit code: %v", err), Code: exitErr.ExitCode()}
	}
	return err
}

func (n *node) exec(w http.ResponseWriter, r *http.Request) {
	ns, name, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	rec, err := n.pod(ns, name)
	if err != nil {
		writeError(w, err)
		return
	}
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		writeError(w, &httpError{http.StatusBadRequest, err.Error()})
		return
	}
	cmd := r.URL.Query()["command"]
	remotecommandserver.ServeExec(w, r, executor{n, rec}, name, types.UID(rec.UID), container, cmd, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}

// forwarder connects port-forward streams to the pod's address.
type forwarder struct{ rec *podRecord }

// PortForward implements portforward.PortForwarder.
func (f forwarder) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	if len(f.rec.IPs) == 0 {
		return fmt.Errorf("pod %q has no address", f.rec.Name)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(f.rec.IPs[0], strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("failed to connect to port %d of pod %q: %w", port, f.rec.Name, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(conn, stream); done <- struct{}{} }()
	go func() { _, _ = io.Copy(stream, conn); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

func (n *node) portForward(w http.ResponseWriter, r *http.Request) {
	rec, err := n.pod(r.PathValue("ns"), r.PathValue("pod"))
	if err != nil {
		writeError(w, err)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		writeError(w, &httpError{http.StatusBadRequest, err.Error()})
		return
	}
	portforward.ServePortForward(w, r, forwarder{rec}, rec.Name, types.UID(rec.UID), opts,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

func notSupported(what string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, what+" is not supported by weft-kubelet-api", http.StatusNotImplemented)
	}
}

func main() {
	listen := flag.String("listen", "", "address:port to serve on (the node's address, port 10250)")
	cert := flag.String("tls-cert-file", "", "serving certificate")
	key := flag.String("tls-private-key-file", "", "serving key")
	clientCA := flag.String("client-ca-file", "", "CA that signs the certificates of allowed clients")
	podsDir := flag.String("pods-dir", "", "weft-nodelet's pods directory")
	flag.Parse()
	if *listen == "" || *cert == "" || *key == "" || *clientCA == "" || *podsDir == "" {
		log.Fatal("--listen, --tls-cert-file, --tls-private-key-file, --client-ca-file and --pods-dir are required")
	}
	caPEM, err := os.ReadFile(*clientCA)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatalf("no certificate in %s", *clientCA)
	}
	n := &node{podsDir: *podsDir}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", n.containerLogs)
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", n.exec)
	mux.HandleFunc("/portForward/{ns}/{pod}", n.portForward)
	mux.HandleFunc("/attach/", notSupported("attach"))
	srv := &http.Server{
		Addr:    *listen,
		Handler: logRequests(mux),
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs:  pool,
			// The SPDY upgrade of exec and port-forward needs HTTP/1.1.
			NextProtos: []string{"http/1.1"},
		},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Printf("serving the kubelet API on %s for %s", *listen, *podsDir)
	log.Fatal(srv.ListenAndServeTLS(*cert, *key))
}

// logRequests logs each request's method and path (never its query, which carries commands).
func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s", r.Method, r.URL.Path)
		h.ServeHTTP(w, r)
	})
}
