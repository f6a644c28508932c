// The fan-out benchmarks' load client: one process, thousands of WebSockets, compiled so that
// its own cost per delivery is little more than the read each delivery needs (reported as
// client_cpu_ms over the window, next to the servers' CPU).
//
// It opens -sockets sockets to -url (at most -parallel handshakes at once), and reads each as
// soon as its snapshots are in. In mode "single" socket i follows auction i mod len(ids) at
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
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// A tick's identity: with several server processes behind one port, each numbers and stamps its
// own, so two processes' ticks never share all three.
type tick struct {
	auction int32 // index in -auctions
	seq     int64
	sentMs  int64
}

// channel is one auction as one socket follows it.
type channel struct {
	auction int32
	last    int64 // the seq of its last numbered message
}

// reader is one socket's state; only its own goroutine touches it until the end.
type reader struct {
	conn      *websocket.Conn
	follows   int
	index     map[string]int32    // auction id -> its place in -auctions
	channels  map[string]*channel // by auction id, from the snapshots on
	latencies []int32             // microseconds
	ticks     []tick              // the ticks stamped in the window it got
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

var (
	keyType    = []byte(`"type":`)
	keySeq     = []byte(`"seq":`)
	keyAuction = []byte(`"auction_id":`)
	keySent    = []byte(`"server_time_ms":`)
	tickType   = []byte("tick")
	snapshot   = []byte("snapshot")
)

// field finds `"name":` (key) in a compact JSON object and returns the raw value after it (a
// number, or a string without its quotes). The servers measured all send compact JSON without
// escapes in these fields; a full decode would cost more than some of the servers do per message.
func field(msg, key []byte) []byte {
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

// number parses a JSON integer (a fraction, if any, is dropped).
func number(raw []byte) (int64, bool) {
	var n int64
	digits := 0
	for _, c := range raw {
		if c == '.' {
			break
		}
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	return n, digits > 0
}

func nowMicros() int64 { return time.Now().UnixNano() / 1000 }

func init() { windowFrom.Store(1 << 62) }

// waitSnapshots reads until the socket has a snapshot for every auction it follows.
func (r *reader) waitSnapshots(deadline time.Time) error {
	_ = r.conn.SetReadDeadline(deadline)
	defer r.conn.SetReadDeadline(time.Time{})
	var buf []byte
	for len(r.channels) < r.follows {
		msg, err := readInto(r.conn, buf)
		if err != nil {
			return err
		}
		buf = msg
		if err := r.handle(msg, nowMicros()); err != nil {
			return err
		}
	}
	return nil
}

// readInto reads the next text message into buf's storage (grown as needed).
func readInto(conn *websocket.Conn, buf []byte) ([]byte, error) {
	for {
		kind, rd, err := conn.NextReader()
		if err != nil {
			return nil, err
		}
		if kind != websocket.TextMessage {
			continue
		}
		if cap(buf) < 2048 {
			buf = make([]byte, 0, 2048)
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := rd.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return nil, err
			}
		}
	}
}

// The measuring window (ms of server time); empty until the "go" line.
var windowFrom, windowTo atomic.Int64

// run reads until the connection ends (its read deadline is set at "go"); ticks stamped in the
// window count. Reading starts as soon as the snapshots are in, so pings are answered and
// nothing queues up while the other sockets connect.
func (r *reader) run() {
	var buf []byte
	for {
		msg, err := readInto(r.conn, buf)
		if err == nil {
			err = r.handle(msg, nowMicros())
		}
		if err != nil {
			r.ended = time.Now()
			return
		}
		buf = msg
	}
}

// handle checks a message's place in its auction's sequence, and records a tick stamped in the
// window. A snapshot starts (or restarts) its auction's sequence.
func (r *reader) handle(msg []byte, received int64) error {
	seq, numbered := number(field(msg, keySeq))
	if !numbered {
		return nil // feed status and the like: no auction's sequence
	}
	id := field(msg, keyAuction)
	ch := r.channels[string(id)]
	if bytes.Equal(field(msg, keyType), snapshot) {
		if ch == nil {
			auction, known := r.index[string(id)]
			if !known {
				return fmt.Errorf("a snapshot of an auction not asked for: %s", msg)
			}
			ch = &channel{auction: auction}
			r.channels[string(id)] = ch
		}
		ch.last = seq
		return nil
	}
	if ch == nil {
		r.gaps++ // an update before its auction's snapshot
		return nil
	}
	if seq != ch.last+1 {
		r.gaps++
	}
	ch.last = seq
	if !bytes.Equal(field(msg, keyType), tickType) {
		return nil
	}
	sent, ok := number(field(msg, keySent))
	if !ok || sent < windowFrom.Load() || sent >= windowTo.Load() {
		return nil
	}
	r.latencies = append(r.latencies, int32(received-sent*1000))
	r.ticks = append(r.ticks, tick{ch.auction, seq, sent})
	return nil
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
	owner := map[tick]int{}
	for i, r := range readers {
		for _, k := range r.ticks {
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
		if len(r.ticks) == 0 {
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
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the window to this file")
	flag.Parse()
	ids := strings.Split(*idList, ",")
	index := map[string]int32{}
	for i, id := range ids {
		index[id] = int32(i)
	}
	debug.SetGCPercent(400) // a few hundred MB at most: fewer collections, less client CPU
	if *url == "" || (*mode != "single" && *mode != "mux") {
		flag.Usage()
		os.Exit(2)
	}

	dialer := websocket.Dialer{HandshakeTimeout: 60 * time.Second, ReadBufferSize: 8192, WriteBufferSize: 1024}
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
			target, follows := *url+"/updates", len(ids)
			if *mode == "single" {
				follows = 1
				target = *url + "/auctions/" + ids[i%len(ids)] + "/updates"
			}
			conn, _, err := dialer.Dial(target, http.Header{})
			if err == nil && *mode == "mux" {
				err = conn.WriteMessage(websocket.TextMessage, subscribe)
			}
			r := &reader{conn: conn, follows: follows, index: index, channels: map[string]*channel{}}
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

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	cpuBefore := cpuMs()
	fromMs := time.Now().UnixMilli()
	windowTo.Store(fromMs + int64(*seconds*1000))
	windowFrom.Store(fromMs)
	stop := time.UnixMilli(windowTo.Load()).Add(time.Duration(*drain * float64(time.Second)))
	windowCPU := make(chan float64, 1) // the client's CPU over the window itself, not the drain
	time.AfterFunc(time.Until(time.UnixMilli(windowTo.Load())), func() { windowCPU <- cpuMs() - cpuBefore })
	for _, r := range readers {
		if r != nil {
			_ = r.conn.SetReadDeadline(stop)
		}
	}
	reading.Wait()

	out := summary{
		Mode: *mode, Sockets: *sockets, Connected: connected, ConnectFailures: int(failures.Load()),
		ConnectSeconds: connectSeconds, WindowSeconds: *seconds, ClientCPUMs: <-windowCPU,
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
