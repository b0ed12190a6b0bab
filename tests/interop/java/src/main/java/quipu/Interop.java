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
 * produce BOOTSTRAP TOPIC CODEC COUNT    records 0..COUNT as workload.py defines them
 * consume BOOTSTRAP TOPIC SPEC...   each SPEC is PARTITION:START:COUNT, START an offset or tTIMESTAMP
 *   (looked up with offsetsForTimes); prints "# PARTITION START" and then one line per record:
 *   offset, key, value, headers, timestamp, tab-separated
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
      for (int i = 0; i < count; i++) {
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
