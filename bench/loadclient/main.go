// The fan-out benchmarks' load client: one process, thousands of WebSockets, compiled so that
// it costs far less per delivery than the servers it measures.
//
// It opens -sockets sockets to -url. In mode "single" socket i follows auction i mod len(ids) at
// {url}/auctions/{id}/updates; in mode "mux" every socket opens {url}/updates and subscribes to
// every id. Once every socket has its snapshots it prints one line "ready {json}" and waits for
// a line on standard input. From then on, for -seconds, it records each tick stamped in that
// window: its delivery latency (receive time minus the tick's server_time_ms; the servers run on
// this machine, on the same clock), and keeps reading for -drain seconds more so that late
// deliveries of those ticks count too. Every numbered message (snapshot, tick, change) must carry
// its auction's previous seq + 1 on that socket; anything else is a gap. It prints its figures as
// one JSON line and exits.
//
// Expected deliveries: sockets that saw a common tick are behind the same server process (there
// may be several on one port); each such group should have had every tick stamped in the window
// that any of its sockets saw. A socket that saw no tick at all counts as missing as many as the
// largest group saw. Pings are answered with pongs (the library's default), as a browser does.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// A tick's identity: with several server processes behind one port, each numbers and stamps its
// own, so two processes' ticks never share all three.
type tickKey struct {
	auction string
	seq     int64
	sentMs  int64
}

// reader is one socket's state; only its own goroutine touches it until the end.
type reader struct {
	conn      *websocket.Conn
	follows   []string
	last      map[string]int64
	latencies []int32 // microseconds
	seen      map[tickKey]struct{}
	gaps      int
	ended     time.Time // when reading stopped
}

type summary struct {
	Mode               string             `json:"mode"`
	Sockets            int                `json:"sockets"`
	Connected          int                `json:"connected"`
	ConnectFailures    int                `json:"connect_failures"`
	FirstConnectError  string             `json:"first_connect_error,omitempty"`
	ConnectSeconds     float64            `json:"connect_seconds"`
	WindowSeconds      float64            `json:"window_seconds"`
	Ticks              int                `json:"ticks_in_window"` // distinct (auction, seq)
	Deliveries         int                `json:"deliveries"`
	ExpectedDeliveries int                `json:"expected_deliveries"`
	Gaps               int                `json:"sequence_gaps"`
	ClosedEarly        int                `json:"closed_early"`
	Silent             int                `json:"sockets_without_ticks"`
	LatencyMs          map[string]float64 `json:"delivery_latency_ms"`
	ClientCPUMs        float64            `json:"client_cpu_ms"`
}

// field finds `"name":` in a compact JSON object and returns the raw value after it (a number,
// or a string without its quotes). The servers measured all send compact JSON without escapes
// in these fields; a full decode would cost more than some of the servers do per message.
func field(msg []byte, name string) []byte {
	key := []byte(`"` + name + `":`)
	i := bytes.Index(msg, key)
	if i < 0 {
		return nil
	}
	rest := msg[i+len(key):]
	if len(rest) > 0 && rest[0] == '"' {
		end := bytes.IndexByte(rest[1:], '"')
		if end < 0 {
			return nil
		}
		return rest[1 : end+1]
	}
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return nil
	}
	return rest[:end]
}

func number(raw []byte) (int64, bool) {
	if raw == nil {
		return 0, false
	}
	if dot := bytes.IndexByte(raw, '.'); dot >= 0 {
		raw = raw[:dot]
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil
}

func nowMicros() int64 { return time.Now().UnixNano() / 1000 }

func init() { windowFrom.Store(1 << 62) }

// waitSnapshots reads until the socket has a snapshot for every auction it follows.
func (r *reader) waitSnapshots(deadline time.Time) error {
	_ = r.conn.SetReadDeadline(deadline)
	defer r.conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 1024)
	for len(r.last) < len(r.follows) {
		msg, err := readInto(r.conn, buf)
		if err != nil {
			return err
		}
		buf = msg[:0]
		if string(field(msg, "type")) != "snapshot" {
			continue
		}
		seq, ok := number(field(msg, "seq"))
		if !ok {
			return fmt.Errorf("a snapshot without seq: %s", msg)
		}
		r.last[string(field(msg, "auction_id"))] = seq
	}
	return nil
}

func readInto(conn *websocket.Conn, buf []byte) ([]byte, error) {
	for {
		kind, rd, err := conn.NextReader()
		if err != nil {
			return nil, err
		}
		if kind != websocket.TextMessage {
			continue
		}
		b := bytes.NewBuffer(buf[:0])
		if _, err := b.ReadFrom(rd); err != nil && err != io.EOF {
			return nil, err
		}
		return b.Bytes(), nil
	}
}

// The measuring window (ms of server time); empty until the "go" line.
var windowFrom, windowTo atomic.Int64

// run reads until the connection ends (its read deadline is set at "go"); ticks stamped in the
// window count. Reading starts as soon as the snapshots are in, so pings are answered and
// nothing queues up while the other sockets connect.
func (r *reader) run() {
	buf := make([]byte, 0, 1024)
	for {
		msg, err := readInto(r.conn, buf)
		if err != nil {
			r.ended = time.Now()
			return
		}
		buf = msg[:0]
		received := nowMicros()
		seq, numbered := number(field(msg, "seq"))
		if !numbered {
			continue // feed status and the like: no auction's sequence
		}
		auction := string(field(msg, "auction_id"))
		if previous, ok := r.last[auction]; ok && seq != previous+1 {
			r.gaps++
		}
		r.last[auction] = seq
		if string(field(msg, "type")) != "tick" {
			continue
		}
		sent, ok := number(field(msg, "server_time_ms"))
		if !ok || sent < windowFrom.Load() || sent >= windowTo.Load() {
			continue
		}
		r.latencies = append(r.latencies, int32(received-sent*1000))
		r.seen[tickKey{auction, seq, sent}] = struct{}{}
	}
}

// expected groups the sockets by the ticks they share (union-find over tick identities) and
// returns the distinct ticks, the deliveries expected, and how many sockets saw no tick.
func expected(readers []*reader) (ticks, deliveries, silent int) {
	parent := make([]int, len(readers))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	owner := map[tickKey]int{}
	for i, r := range readers {
		for k := range r.seen {
			if j, ok := owner[k]; ok {
				parent[find(i)] = find(j)
			} else {
				owner[k] = i
			}
		}
	}
	groupTicks, groupSockets := map[int]int{}, map[int]int{}
	for _, i := range owner {
		groupTicks[find(i)]++
	}
	largest := 0
	for i, r := range readers {
		if len(r.seen) == 0 {
			silent++
			continue
		}
		groupSockets[find(i)]++
	}
	for root, n := range groupTicks {
		deliveries += n * groupSockets[root]
		largest = max(largest, n)
	}
	return len(owner), deliveries + silent*largest, silent
}

func percentile(sorted []int32, q float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	i := int(q * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i]) / 1000
}

func cpuMs() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

func main() {
	url := flag.String("url", "", "the server's ws:// base URL")
	mode := flag.String("mode", "single", "single: /auctions/{id}/updates; mux: /updates with a subscribe")
	sockets := flag.Int("sockets", 1000, "sockets to open")
	idList := flag.String("auctions", "fan-0", "auction ids, comma separated")
	seconds := flag.Float64("seconds", 20, "the measuring window")
	drain := flag.Float64("drain", 5, "seconds to keep reading after the window, for late deliveries")
	parallel := flag.Int("parallel", 200, "handshakes in flight at once")
	flag.Parse()
	ids := strings.Split(*idList, ",")
	if *url == "" || (*mode != "single" && *mode != "mux") {
		flag.Usage()
		os.Exit(2)
	}

	dialer := websocket.Dialer{HandshakeTimeout: 60 * time.Second, ReadBufferSize: 2048, WriteBufferSize: 1024}
	subscribe, _ := json.Marshal(map[string]any{"type": "subscribe", "auctions": ids})
	readers := make([]*reader, *sockets)
	var failures atomic.Int64
	var firstError atomic.Value
	var wg, reading sync.WaitGroup
	slots := make(chan struct{}, *parallel)
	started := time.Now()
	for i := range readers {
		slots <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-slots }()
			target, follows := *url+"/updates", ids
			if *mode == "single" {
				follows = []string{ids[i%len(ids)]}
				target = *url + "/auctions/" + follows[0] + "/updates"
			}
			conn, _, err := dialer.Dial(target, http.Header{})
			if err == nil && *mode == "mux" {
				err = conn.WriteMessage(websocket.TextMessage, subscribe)
			}
			r := &reader{conn: conn, follows: follows, last: map[string]int64{}, seen: map[tickKey]struct{}{}}
			if err == nil {
				err = r.waitSnapshots(time.Now().Add(120 * time.Second))
			}
			if err != nil {
				failures.Add(1)
				firstError.CompareAndSwap(nil, err.Error())
				if conn != nil {
					conn.Close()
				}
				return
			}
			readers[i] = r
			reading.Add(1)
			go func() {
				defer reading.Done()
				r.run()
			}()
		}(i)
	}
	wg.Wait()
	connectSeconds := time.Since(started).Seconds()
	connected := 0
	for _, r := range readers {
		if r != nil {
			connected++
		}
	}
	ready, _ := json.Marshal(map[string]any{"connected": connected, "connect_seconds": connectSeconds})
	fmt.Printf("ready %s\n", ready)
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "no go line on stdin:", err)
		os.Exit(1)
	}

	cpuBefore := cpuMs()
	fromMs := time.Now().UnixMilli()
	windowTo.Store(fromMs + int64(*seconds*1000))
	windowFrom.Store(fromMs)
	stop := time.UnixMilli(windowTo.Load()).Add(time.Duration(*drain * float64(time.Second)))
	for _, r := range readers {
		if r != nil {
			_ = r.conn.SetReadDeadline(stop)
		}
	}
	reading.Wait()
	cpuAfter := cpuMs()

	out := summary{
		Mode: *mode, Sockets: *sockets, Connected: connected, ConnectFailures: int(failures.Load()),
		ConnectSeconds: connectSeconds, WindowSeconds: *seconds, ClientCPUMs: cpuAfter - cpuBefore,
	}
	if e, ok := firstError.Load().(string); ok {
		out.FirstConnectError = e
	}
	var all []int32
	var live []*reader
	for _, r := range readers {
		if r == nil {
			continue
		}
		all = append(all, r.latencies...)
		out.Gaps += r.gaps
		if r.ended.Before(stop.Add(-100 * time.Millisecond)) {
			out.ClosedEarly++
		}
		live = append(live, r)
		_ = r.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		r.conn.Close()
	}
	out.Ticks, out.ExpectedDeliveries, out.Silent = expected(live)
	out.Deliveries = len(all)
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	out.LatencyMs = map[string]float64{
		"p50": percentile(all, 0.50), "p90": percentile(all, 0.90), "p99": percentile(all, 0.99),
		"p999": percentile(all, 0.999), "max": percentile(all, 1),
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
