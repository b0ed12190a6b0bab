package quipu;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Drives Apache Kafka's Java client for the interop suite (tests/interop/test_java_client.py).
 *
 * <pre>
 * produce BOOTSTRAP TOPIC CODEC COUNT    records 0..COUNT as workload.py defines them, at most
 *   QUIPU_PRODUCE_RATE records a second when that variable is set
 * consume BOOTSTRAP TOPIC SPEC...   each SPEC is PARTITION:START:COUNT, START an offset or tTIMESTAMP
 *   (looked up with offsetsForTimes); prints "# PARTITION START" and then one line per record:
 *   offset, key, value, headers, timestamp, tab-separated
 * group BOOTSTRAP TOPIC GROUP STOPFILE   a group member that commits after every poll until
 *   STOPFILE exists, then leaves cleanly; prints "A p,p,..." on assignment, "V p,p,..." on
 *   revocation, "R PARTITION OFFSET" per record, "C p:position ..." after a successful commit
 *   and "F" after a failed one
 * </pre>
 */
public final class Interop {
  static final int PARTITIONS = 3;
  static final long BASE_TS = 1_700_000_000_000L;

  static byte[] key(int i) {
    return ("key-" + i).getBytes(StandardCharsets.UTF_8);
  }

  static byte[] value(int i) {
    StringBuilder b = new StringBuilder(String.format("v%08d-", i));
    for (int n = 0; n < i % 17 + 3; n++) {
      b.append("lorem ipsum dolor ");
    }
    return b.toString().getBytes(StandardCharsets.UTF_8);
  }

  public static void main(String[] args) throws Exception {
    switch (args[0]) {
      case "produce" -> produce(args[1], args[2], args[3], Integer.parseInt(args[4]));
      case "consume" -> {
        try (KafkaConsumer<byte[], byte[]> c = consumer(args[1])) {
          for (int i = 3; i < args.length; i++) {
            String[] spec = args[i].split(":");
            int partition = Integer.parseInt(spec[0]);
            long start = spec[1].startsWith("t") ? offsetForTime(c, args[2], partition, Long.parseLong(spec[1].substring(1))) : Long.parseLong(spec[1]);
            System.out.println("# " + partition + " " + start);
            if (start >= 0) {
              consume(c, args[2], partition, start, Integer.parseInt(spec[2]) - (spec[1].startsWith("t") ? (int) start : 0));
            }
          }
        }
      }
      case "group" -> group(args[1], args[2], args[3], args[4], args.length > 5 ? args[5] : "eager");
      default -> throw new IllegalArgumentException("unknown mode " + args[0]);
    }
  }

  static void produce(String bootstrap, String topic, String codec, int count) throws Exception {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
    p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
    // Otherwise the producer's defaults: idempotence on, five requests in flight, retries.
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
      List<Future<RecordMetadata>> futures = new ArrayList<>(count);
      String rateVar = System.getenv("QUIPU_PRODUCE_RATE");
      double perSecond = rateVar == null ? 0 : Double.parseDouble(rateVar);
      long startNs = System.nanoTime();
      for (int i = 0; i < count; i++) {
        if (perSecond > 0 && i % 500 == 0) {
          long dueNs = startNs + (long) (i / perSecond * 1e9);
          long aheadMs = (dueNs - System.nanoTime()) / 1_000_000;
          if (aheadMs > 0) {
            Thread.sleep(aheadMs);
          }
        }
        List<Header> headers = List.of(
            new RecordHeader("idx", Integer.toString(i).getBytes(StandardCharsets.UTF_8)),
            new RecordHeader("client", "java".getBytes(StandardCharsets.UTF_8)));
        futures.add(producer.send(new ProducerRecord<>(topic, i % PARTITIONS, BASE_TS + i, key(i), value(i), headers)));
      }
      producer.flush();
      for (Future<RecordMetadata> f : futures) {
        f.get();
      }
    }
    System.out.println("produced " + count);
  }

  static void group(String bootstrap, String topic, String groupId, String stopFile, String strategy)
      throws Exception {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, groupId);
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 50);
    p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6000);
    p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000);
    p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, strategy.equals("cooperative")
        ? org.apache.kafka.clients.consumer.CooperativeStickyAssignor.class.getName()
        : org.apache.kafka.clients.consumer.RangeAssignor.class.getName());
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    java.io.PrintStream out = new java.io.PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true);
    java.nio.file.Path stop = java.nio.file.Path.of(stopFile);
    try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
      c.subscribe(List.of(topic), new org.apache.kafka.clients.consumer.ConsumerRebalanceListener() {
        public void onPartitionsRevoked(java.util.Collection<TopicPartition> parts) {
          out.println(line("V ", parts));
        }

        public void onPartitionsLost(java.util.Collection<TopicPartition> parts) {
          out.println(line("V ", parts));
        }

        public void onPartitionsAssigned(java.util.Collection<TopicPartition> parts) {
          out.println(line("A ", parts));
        }
      });
      while (!java.nio.file.Files.exists(stop)) {
        var records = c.poll(Duration.ofMillis(200));
        if (records.isEmpty()) {
          continue;
        }
        StringBuilder b = new StringBuilder();
        for (ConsumerRecord<byte[], byte[]> r : records) {
          b.append("R ").append(r.partition()).append(' ').append(r.offset()).append('\n');
        }
        out.print(b);
        try {
          Map<TopicPartition, org.apache.kafka.clients.consumer.OffsetAndMetadata> positions = new java.util.HashMap<>();
          for (TopicPartition tp : c.assignment()) {
            positions.put(tp, new org.apache.kafka.clients.consumer.OffsetAndMetadata(c.position(tp)));
          }
          c.commitSync(positions);
          StringBuilder done = new StringBuilder("C");
          positions.forEach((tp, om) -> done.append(' ').append(tp.partition()).append(':').append(om.offset()));
          out.println(done);
        } catch (org.apache.kafka.clients.consumer.CommitFailedException
            | org.apache.kafka.common.errors.RebalanceInProgressException e) {
          out.println("F");
        }
        Thread.sleep(20);
      }
    }
    out.println("closed");
  }

  static String line(String prefix, java.util.Collection<TopicPartition> parts) {
    StringBuilder b = new StringBuilder(prefix);
    for (TopicPartition tp : parts) {
      b.append(tp.partition()).append(',');
    }
    return b.toString();
  }

  static KafkaConsumer<byte[], byte[]> consumer(String bootstrap) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10000);
    p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 100);
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    return new KafkaConsumer<>(p);
  }

  static void consume(KafkaConsumer<byte[], byte[]> c, String topic, int partition, long offset, int count) {
    TopicPartition tp = new TopicPartition(topic, partition);
    StringBuilder out = new StringBuilder();
    {
      c.assign(List.of(tp));
      c.seek(tp, offset);
      int got = 0;
      long deadline = System.currentTimeMillis() + 60_000;
      while (got < count && System.currentTimeMillis() < deadline) {
        for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
          out.append(r.offset()).append('\t')
              .append(new String(r.key(), StandardCharsets.UTF_8)).append('\t')
              .append(new String(r.value(), StandardCharsets.UTF_8)).append('\t');
          for (Header h : r.headers()) {
            out.append(h.key()).append('=').append(new String(h.value(), StandardCharsets.UTF_8)).append(',');
          }
          out.append('\t').append(r.timestamp()).append('\n');
          got++;
        }
      }
    }
    System.out.print(out);
  }

  static long offsetForTime(KafkaConsumer<byte[], byte[]> c, String topic, int partition, long ts) {
    TopicPartition tp = new TopicPartition(topic, partition);
    Map<TopicPartition, OffsetAndTimestamp> found = c.offsetsForTimes(Map.of(tp, ts), Duration.ofSeconds(30));
    OffsetAndTimestamp o = found.get(tp);
    return o == null ? -1 : o.offset();
  }
}
