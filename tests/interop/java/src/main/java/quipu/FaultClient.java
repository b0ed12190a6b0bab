package quipu;

import java.io.BufferedWriter;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.UncheckedIOException;
import java.io.Writer;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ApiException;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.UnknownProducerIdException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * A workload client on Apache Kafka's Java client for the fault harness (tests/faults), run as its
 * own process: one producer or one consumer and the history it records, one JSON event per line
 * (send, poll, assign, commit, as tests/faults/HISTORY.md defines them), each line flushed as it
 * is written. The flags and events are
 * tests/faults/rdkafka_client.py's:
 *
 * <pre>
 * produce --bootstrap B --topic T --client NAME --count N [--rate R] [--idempotent|--no-idempotent]
 *         [--acks all|1] [--keys K] [--flush-s S] --out FILE
 * consume --bootstrap B --topic T --client NAME (--group G [--strategy cooperative-sticky|range]
 *         | --assign P,P,...) --stop-file F [--commit-every-s 1] [--idle-s 3] --out FILE
 * </pre>
 *
 * On SIGTERM (a shutdown hook) the client finishes as when done (a producer waits up to S s for
 * its outstanding records, then writes "unknown" for each left; a consumer commits and closes)
 * and exits 0.
 */
public final class FaultClient {
  static final AtomicBoolean STOPPING = new AtomicBoolean();
  static final CountDownLatch DONE = new CountDownLatch(1);
  static volatile int exitCode = 0;

  public static void main(String[] argv) throws Exception {
    Map<String, String> flags = flags(argv);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      STOPPING.set(true);
      try {
        DONE.await();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      Runtime.getRuntime().halt(exitCode);
    }));
    try (History history = new History(flags.get("out"), flags.get("client"))) {
      switch (argv[0]) {
        case "produce" -> produce(flags, history);
        case "consume" -> consume(flags, history);
        default -> throw new IllegalArgumentException("unknown mode " + argv[0]);
      }
    } catch (Throwable e) {
      e.printStackTrace();
      exitCode = 1;
    } finally {
      DONE.countDown();
    }
    System.exit(exitCode);
  }

  /** "--flag value" pairs after the mode; a flag with no value is "true", --no-flag "false". */
  static Map<String, String> flags(String[] argv) {
    Map<String, String> flags = new HashMap<>();
    for (int i = 1; i < argv.length; i++) {
      String name = argv[i].replaceFirst("^--", "");
      if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) {
        flags.put(name, argv[++i]);
      } else if (name.startsWith("no-")) {
        flags.put(name.substring(3), "false");
      } else {
        flags.put(name, "true");
      }
    }
    for (String required : List.of("bootstrap", "topic", "client", "out")) {
      if (!flags.containsKey(required)) {
        throw new IllegalArgumentException("--" + required + " is required");
      }
    }
    return flags;
  }

  static double now() {
    return System.currentTimeMillis() / 1000.0;
  }

  static void log(String line) {
    System.err.println(java.time.LocalTime.now().withNano(0) + " " + line);
  }

  // -------------------------------------------------------------------------------------------
  // produce

  /**
   * The result of a record whose send failed with {@code e}: "fail" only when it was definitely
   * not written, else "unknown". Timeouts and retriable errors (a lost connection, retries
   * exhausted on NOT_ENOUGH_REPLICAS or NOT_LEADER_OR_FOLLOWER...) may follow an attempt that was
   * written, and so may the idempotent producer's sequence and epoch errors and the client's own
   * aborts (plain KafkaExceptions, such as a forced close). The broker's or the client's refusal
   * of the record itself (InvalidRecordException, RecordTooLargeException,
   * RecordBatchTooLargeException, InvalidTopicException...) is a "fail".
   */
  static String classify(Exception e) {
    boolean maybeWritten = e instanceof RetriableException || e instanceof TimeoutException
        || e instanceof OutOfOrderSequenceException || e instanceof UnknownProducerIdException
        || e instanceof InvalidProducerEpochException || e instanceof ProducerFencedException
        || !(e instanceof ApiException);
    return maybeWritten ? "unknown" : "fail";
  }

  static KafkaProducer<String, String> producer(Map<String, String> flags) {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, flags.get("bootstrap"));
    p.put(ProducerConfig.ACKS_CONFIG, flags.getOrDefault("acks", "all"));
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, flags.getOrDefault("idempotent", "true"));
    p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30000);
    p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
    p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 5000);
    p.put(ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500);
    // send() waits this long for metadata or buffer space: bounded, so that a stop is prompt.
    p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 10000);
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    return new KafkaProducer<>(p);
  }

  /** The records sent and not yet reported, and the send events that report them. */
  static final class Sends {
    record Sent(double t0, String key) {}

    final History history;
    final String topic;
    final boolean idempotent;
    final Map<String, Sent> pending = new ConcurrentHashMap<>();

    Sends(History history, String topic, boolean idempotent) {
      this.history = history;
      this.topic = topic;
      this.idempotent = idempotent;
    }

    void event(String value, Sent sent, String result, RecordMetadata md, Exception error) {
      boolean ok = result.equals("ok");
      history.write("send", "t0", sent.t0(), "topic", topic, "key", sent.key(), "value", value,
          "idempotent", idempotent, "result", result,
          "partition", ok ? md.partition() : null, "offset", ok ? md.offset() : null,
          "error", error == null ? null : error.getClass().getSimpleName() + ": " + error.getMessage());
    }

    /** The send callback: reports the record unless it was already given up as "unknown". */
    void completed(String value, RecordMetadata md, Exception error) {
      Sent sent = pending.remove(value);
      if (sent != null) {
        event(value, sent, error == null ? "ok" : classify(error), md, error);
      }
    }

    void send(KafkaProducer<String, String> producer, String value, String key) {
      pending.put(value, new Sent(now(), key));
      try {
        producer.send(new ProducerRecord<>(topic, key, value), (md, e) -> completed(value, md, e));
      } catch (KafkaException e) {
        completed(value, null, e);
      }
    }

    void giveUp() {
      for (String value : new ArrayList<>(pending.keySet())) {
        Sent sent = pending.remove(value);
        if (sent != null) {
          event(value, sent, "unknown", null, new IllegalStateException("still in flight when the producer stopped"));
        }
      }
    }
  }

  static void produce(Map<String, String> flags, History history) throws InterruptedException {
    boolean idempotent = Boolean.parseBoolean(flags.getOrDefault("idempotent", "true"));
    int count = Integer.parseInt(flags.get("count"));
    double rate = Double.parseDouble(flags.getOrDefault("rate", "0"));
    int keys = Integer.parseInt(flags.getOrDefault("keys", "0"));
    Sends sends = new Sends(history, flags.get("topic"), idempotent);
    KafkaProducer<String, String> producer = producer(flags);
    long startMs = System.currentTimeMillis();
    int made = 0;
    for (; made < count && !STOPPING.get(); made++) {
      long aheadMs = rate > 0 ? startMs + (long) (made * 1000.0 / rate) - System.currentTimeMillis() : 0;
      if (aheadMs > 0) {
        Thread.sleep(aheadMs);
      }
      sends.send(producer, flags.get("client") + "-" + made, keys > 0 ? "k-" + made % keys : null);
    }
    double flushS = Double.parseDouble(flags.getOrDefault("flush-s", "40"));
    long deadline = System.currentTimeMillis() + (long) (flushS * 1000);
    while (!sends.pending.isEmpty() && System.currentTimeMillis() < deadline) {
      Thread.sleep(20);
    }
    sends.giveUp();
    producer.close(Duration.ZERO);
    log("produced " + made + " of " + count + " records, stopped=" + STOPPING.get());
  }

  // -------------------------------------------------------------------------------------------
  // consume

  static KafkaConsumer<String, String> consumer(Map<String, String> flags) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, flags.get("bootstrap"));
    if (flags.containsKey("group")) {
      p.put(ConsumerConfig.GROUP_ID_CONFIG, flags.get("group"));
      p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
    }
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6000);
    p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000);
    p.put(ConsumerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500);
    p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
        flags.getOrDefault("strategy", "cooperative-sticky").equals("range")
            ? RangeAssignor.class.getName() : CooperativeStickyAssignor.class.getName());
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    return new KafkaConsumer<>(p);
  }

  /** The consumer's assignment, recorded in full after each rebalance callback. */
  static final class Assignment implements ConsumerRebalanceListener {
    final History history;
    final String group;
    final TreeSet<TopicPartition> partitions = new TreeSet<>(
        Comparator.comparing(TopicPartition::topic).thenComparingInt(TopicPartition::partition));
    /** The next offset to read of each partition read from since its last commit. */
    final Map<TopicPartition, Long> uncommitted = new HashMap<>();

    Assignment(History history, String group) {
      this.history = history;
      this.group = group;
    }

    void record() {
      List<Object> parts = new ArrayList<>();
      for (TopicPartition tp : partitions) {
        parts.add(List.of(tp.topic(), tp.partition()));
      }
      history.write("assign", "group", group, "partitions", parts);
    }

    public void onPartitionsAssigned(Collection<TopicPartition> parts) {
      partitions.addAll(parts);
      record();
    }

    public void onPartitionsRevoked(Collection<TopicPartition> parts) {
      partitions.removeAll(parts);
      uncommitted.keySet().removeAll(parts);
      record();
    }

    public void onPartitionsLost(Collection<TopicPartition> parts) {
      onPartitionsRevoked(parts);
    }
  }

  /** A synchronous commit of what was read since the last one; a commit event per partition. */
  static void commit(KafkaConsumer<String, String> c, Assignment a) {
    if (a.uncommitted.isEmpty()) {
      return;
    }
    Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
    a.uncommitted.forEach((tp, next) -> offsets.put(tp, new OffsetAndMetadata(next)));
    double t0 = now();
    try {
      c.commitSync(offsets);
    } catch (KafkaException e) {
      log("commit failed: " + e);
      return;
    }
    offsets.forEach((tp, om) -> a.history.write("commit", "t0", t0, "group", a.group,
        "topic", tp.topic(), "partition", tp.partition(), "offset", om.offset()));
    offsets.forEach((tp, om) -> a.uncommitted.remove(tp, om.offset()));
  }

  /** Polls (and commits, in a group) until the stop file exists and no record came for
   * --idle-s, or until SIGTERM. */
  static void readUntilStopped(KafkaConsumer<String, String> c, Assignment a, Map<String, String> flags) {
    Path stopFile = Path.of(flags.get("stop-file"));
    long commitEveryMs = (long) (Double.parseDouble(flags.getOrDefault("commit-every-s", "1")) * 1000);
    long idleMs = (long) (Double.parseDouble(flags.getOrDefault("idle-s", "3")) * 1000);
    long lastRecord = System.currentTimeMillis();
    long lastCommit = lastRecord;
    while (!STOPPING.get()) {
      for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
        a.history.write("poll", "group", a.group, "topic", r.topic(), "partition", r.partition(),
            "offset", r.offset(), "key", r.key(), "value", r.value());
        a.uncommitted.put(new TopicPartition(r.topic(), r.partition()), r.offset() + 1);
        lastRecord = System.currentTimeMillis();
      }
      if (a.group != null && System.currentTimeMillis() - lastCommit >= commitEveryMs) {
        commit(c, a);
        lastCommit = System.currentTimeMillis();
      }
      if (Files.exists(stopFile) && System.currentTimeMillis() - lastRecord >= idleMs) {
        break;
      }
    }
  }

  static void consume(Map<String, String> flags, History history) {
    String topic = flags.get("topic");
    Assignment a = new Assignment(history, flags.get("group"));
    try (KafkaConsumer<String, String> c = consumer(flags)) {
      if (a.group != null) {
        c.subscribe(List.of(topic), a);
      } else {
        for (String p : flags.get("assign").split(",")) {
          a.partitions.add(new TopicPartition(topic, Integer.parseInt(p)));
        }
        c.assign(a.partitions);
        a.partitions.forEach(tp -> c.seek(tp, 0));
        a.record();
      }
      readUntilStopped(c, a, flags);
      if (a.group != null) {
        commit(c, a);
      }
    }
    log("consumer closed, stopped=" + STOPPING.get());
  }

  // -------------------------------------------------------------------------------------------
  // the history

  /** The client's history file, one event a line, each line flushed as it is written. */
  static final class History implements AutoCloseable {
    final Writer out;
    final String client;

    History(String path, String client) throws IOException {
      this.out = new BufferedWriter(new OutputStreamWriter(new FileOutputStream(path, true), StandardCharsets.UTF_8));
      this.client = client;
    }

    /** One event: its type, then alternating field names and values. */
    synchronized void write(String type, Object... fields) {
      StringBuilder b = new StringBuilder("{\"type\":").append(json(type))
          .append(",\"client\":").append(json(client)).append(",\"t\":").append(json(now()));
      for (int i = 0; i < fields.length; i += 2) {
        b.append(',').append(json(fields[i])).append(':').append(json(fields[i + 1]));
      }
      try {
        out.write(b.append("}\n").toString());
        out.flush();
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }

    public synchronized void close() throws IOException {
      out.close();
    }
  }

  /** JSON for null, a string, a boolean, a number or a list of these. */
  static String json(Object v) {
    if (v == null || v instanceof Boolean || v instanceof Integer || v instanceof Long) {
      return String.valueOf(v);
    }
    if (v instanceof Double d) {
      return BigDecimal.valueOf(d).toPlainString();
    }
    if (v instanceof List<?> list) {
      StringBuilder b = new StringBuilder("[");
      for (Object item : list) {
        b.append(b.length() > 1 ? "," : "").append(json(item));
      }
      return b.append(']').toString();
    }
    StringBuilder b = new StringBuilder("\"");
    for (char ch : v.toString().toCharArray()) {
      switch (ch) {
        case '"' -> b.append("\\\"");
        case '\\' -> b.append("\\\\");
        case '\n' -> b.append("\\n");
        default -> b.append(ch < 0x20 ? String.format("\\u%04x", (int) ch) : String.valueOf(ch));
      }
    }
    return b.append('"').toString();
  }
}
