// Publish one alert to tocsin over JetStream, from Java (docs/publishing.md).
// Written for io.nats:jnats 2.20.
package example;

import io.nats.client.Connection;
import io.nats.client.JetStream;
import io.nats.client.JetStreamApiException;
import io.nats.client.Message;
import io.nats.client.Nats;
import io.nats.client.Options;
import io.nats.client.PublishOptions;
import io.nats.client.api.PublishAck;
import io.nats.client.impl.Headers;
import io.nats.client.impl.NatsMessage;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;

public final class Publish {
    private static final SecureRandom RANDOM = new SecureRandom();

    private static String randomHex(int bytes) {
        byte[] buffer = new byte[bytes];
        RANDOM.nextBytes(buffer);
        return HexFormat.of().formatHex(buffer);
    }

    public static void main(String[] args) throws InterruptedException {
        String url = System.getenv().getOrDefault("NATS_URL", "nats://127.0.0.1:4222");
        String eventId = randomHex(10); // keep it when you retry: tocsin counts the alert once
        String body = "{\"type\":\"payment_failed\",\"severity\":\"error\","
                + "\"summary\":\"card processor returned 502\",\"labels\":{\"region\":\"eu\"},"
                + "\"details\":{\"processor\":\"acme\",\"attempts\":3},"
                + "\"event_id\":\"" + eventId + "\"}";
        Options options = new Options.Builder()
                .server(url)
                .connectionTimeout(Duration.ofSeconds(2))
                .maxReconnects(0)
                .build();
        try (Connection nc = Nats.connect(options)) {
            JetStream js = nc.jetStream();
            Headers headers = new Headers()
                    .put("traceparent", "00-" + randomHex(16) + "-" + randomHex(8) + "-01");
            Message message = NatsMessage.builder()
                    .subject("alerts.in.billing")
                    .headers(headers)
                    .data(body.getBytes(StandardCharsets.UTF_8))
                    .build();
            // messageId sets Nats-Msg-Id: JetStream drops a re-send within its duplicate window.
            PublishOptions publishOptions = PublishOptions.builder()
                    .messageId(eventId)
                    .streamTimeout(Duration.ofSeconds(2))
                    .build();
            PublishAck ack = js.publish(message, publishOptions);
            System.out.printf("stored %s: stream %s seq %d%n", eventId, ack.getStream(), ack.getSeqno());
        } catch (IOException | JetStreamApiException error) {
            // Not stored: keep the event (with its event_id) and publish it again later.
            System.err.printf("alert %s not stored: %s%n", eventId, error);
            System.exit(1);
        }
    }
}
