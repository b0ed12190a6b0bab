// Command franz-interop drives franz-go (github.com/twmb/franz-go, a Kafka client in Go) for the
// interop suite (tests/interop/test_franz_go.py), in the manner of the suite's Java driver:
//
//	produce BOOTSTRAP TOPIC CODEC COUNT   records 0..COUNT as workload.py defines them
//	consume BOOTSTRAP TOPIC SPEC...       each SPEC is PARTITION:START:COUNT, START an offset or
//	                                      tTIMESTAMP (looked up with ListOffsets); prints
//	                                      "# PARTITION START", then a line per record: offset,
//	                                      key, value, headers, timestamp, tab-separated
//	group BOOTSTRAP TOPIC GROUP STOPFILE [eager|cooperative]
//	                                      a group member that commits after every poll until
//	                                      STOPFILE exists, then leaves; prints the Java member's
//	                                      events: "A p,p" assigned, "V p,p" revoked or lost,
//	                                      "R PARTITION OFFSET", "C p:position ..." or "F"
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	partitions = 3
	baseTS     = int64(1_700_000_000_000)
)

func key(i int) []byte { return []byte(fmt.Sprintf("key-%d", i)) }

func value(i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "v%08d-", i)
	for n := 0; n < i%17+3; n++ {
		b.WriteString("lorem ipsum dolor ")
	}
	return []byte(b.String())
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func codec(name string) kgo.CompressionCodec {
	switch name {
	case "none":
		return kgo.NoCompression()
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	fail("unknown codec %s", name)
	return kgo.NoCompression()
}

// produce writes records 0..count with franz-go's defaults otherwise: idempotent, acks=all.
func produce(bootstrap, topic, codecName string, count int) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ProducerBatchCompression(codec(codecName)),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.AllowAutoTopicCreation(),
	)
	if err != nil {
		fail("client: %v", err)
	}
	defer cl.Close()
	ctx := context.Background()
	var once sync.Once
	var firstErr error
	for i := 0; i < count; i++ {
		r := &kgo.Record{
			Topic:     topic,
			Partition: int32(i % partitions),
			Key:       key(i),
			Value:     value(i),
			Headers: []kgo.RecordHeader{
				{Key: "idx", Value: []byte(strconv.Itoa(i))},
				{Key: "client", Value: []byte("franz-go")},
			},
			Timestamp: time.UnixMilli(baseTS + int64(i)),
		}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				once.Do(func() { firstErr = err })
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		fail("flush: %v", err)
	}
	if firstErr != nil {
		fail("produce: %v", firstErr)
	}
	fmt.Printf("produced %d\n", count)
}

// offsetForTime asks the partition's leader (ListOffsets) for the first offset at or after ts.
func offsetForTime(cl *kgo.Client, topic string, partition int32, ts int64) int64 {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	t := kmsg.NewListOffsetsRequestTopic()
	t.Topic = topic
	p := kmsg.NewListOffsetsRequestTopicPartition()
	p.Partition = partition
	p.Timestamp = ts
	p.CurrentLeaderEpoch = -1
	t.Partitions = append(t.Partitions, p)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		fail("list offsets: %v", err)
	}
	got := resp.Topics[0].Partitions[0]
	if got.ErrorCode != 0 {
		fail("list offsets: error code %d", got.ErrorCode)
	}
	return got.Offset
}

func consume(out *bufio.Writer, bootstrap, topic string, partition int32, start int64, count int) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			topic: {partition: kgo.NewOffset().At(start)},
		}),
	)
	if err != nil {
		fail("client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := 0
	for got < count && ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		fetches.EachError(func(t string, p int32, err error) {
			if ctx.Err() == nil {
				fail("fetch %s-%d: %v", t, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if got >= count {
				return
			}
			fmt.Fprintf(out, "%d\t%s\t%s\t", r.Offset, r.Key, r.Value)
			for _, h := range r.Headers {
				fmt.Fprintf(out, "%s=%s,", h.Key, h.Value)
			}
			fmt.Fprintf(out, "\t%d\n", r.Timestamp.UnixMilli())
			got++
		})
	}
}

// group consumes as a member of groupID. Rebalances are held back while a poll's records are
// reported and committed (BlockRebalanceOnPoll), so events come in the order the Java member
// prints them: a revocation never falls between a read and its commit.
func group(bootstrap, topic, groupID, stopFile, strategy string) {
	balancer := kgo.RangeBalancer()
	if strategy == "cooperative" {
		balancer = kgo.CooperativeStickyBalancer()
	}
	var mu sync.Mutex // callbacks run on the client's goroutines
	out := bufio.NewWriter(os.Stdout)
	emit := func(lines string) {
		mu.Lock()
		defer mu.Unlock()
		out.WriteString(lines)
		out.Flush()
	}
	report := func(prefix string, assigned map[string][]int32) {
		parts := append([]int32(nil), assigned[topic]...)
		sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
		list := make([]string, len(parts))
		for i, p := range parts {
			list[i] = strconv.Itoa(int(p))
		}
		emit(fmt.Sprintf("%s %s\n", prefix, strings.Join(list, ",")))
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumerGroup(groupID),
		kgo.ConsumeTopics(topic),
		kgo.Balancers(balancer),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(6*time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { report("A", m) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { report("V", m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { report("V", m) }),
	)
	if err != nil {
		fail("client: %v", err)
	}
	for {
		if _, err := os.Stat(stopFile); err == nil {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fetches := cl.PollRecords(ctx, 50)
		cancel()
		records := fetches.Records()
		if len(records) > 0 {
			var read strings.Builder
			for _, r := range records {
				fmt.Fprintf(&read, "R %d %d\n", r.Partition, r.Offset)
			}
			emit(read.String())
			offsets := cl.UncommittedOffsets()
			committed := true
			cl.CommitOffsetsSync(context.Background(), offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				if err != nil {
					committed = false
					return
				}
				for _, t := range resp.Topics {
					for _, p := range t.Partitions {
						if p.ErrorCode != 0 {
							committed = false
						}
					}
				}
			})
			if committed {
				line := "C"
				for _, p := range sortedPartitions(offsets[topic]) {
					line += fmt.Sprintf(" %d:%d", p, offsets[topic][p].Offset)
				}
				emit(line + "\n")
			} else {
				emit("F\n")
			}
			time.Sleep(20 * time.Millisecond)
		}
		cl.AllowRebalance()
	}
	cl.Close() // leaves the group
	emit("closed\n")
}

func sortedPartitions(m map[int32]kgo.EpochOffset) []int32 {
	parts := make([]int32, 0, len(m))
	for p := range m {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	return parts
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: franz-interop produce|consume BOOTSTRAP TOPIC ...")
	}
	mode, bootstrap, topic := os.Args[1], os.Args[2], os.Args[3]
	switch mode {
	case "produce":
		count, err := strconv.Atoi(os.Args[5])
		if err != nil {
			fail("count: %v", err)
		}
		produce(bootstrap, topic, os.Args[4], count)
	case "group":
		if len(os.Args) < 6 {
			fail("usage: franz-interop group BOOTSTRAP TOPIC GROUP STOPFILE [eager|cooperative]")
		}
		strategy := "eager"
		if len(os.Args) > 6 {
			strategy = os.Args[6]
		}
		group(bootstrap, topic, os.Args[4], os.Args[5], strategy)
	case "consume":
		out := bufio.NewWriter(os.Stdout)
		defer out.Flush()
		lookup, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
		if err != nil {
			fail("client: %v", err)
		}
		defer lookup.Close()
		for _, spec := range os.Args[4:] {
			parts := strings.Split(spec, ":")
			p, _ := strconv.Atoi(parts[0])
			count, _ := strconv.Atoi(parts[2])
			var start int64
			if strings.HasPrefix(parts[1], "t") {
				ts, _ := strconv.ParseInt(parts[1][1:], 10, 64)
				start = offsetForTime(lookup, topic, int32(p), ts)
				count -= int(start)
			} else {
				start, _ = strconv.ParseInt(parts[1], 10, 64)
			}
			fmt.Fprintf(out, "# %d %d\n", p, start)
			if start >= 0 {
				consume(out, bootstrap, topic, int32(p), start, count)
			}
		}
	default:
		fail("unknown mode %s", mode)
	}
}
