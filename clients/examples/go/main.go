// Publish one alert to tocsin over JetStream, from Go (docs/publishing.md).
// Written for github.com/nats-io/nats.go v1.37 and its jetstream package.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func publish(url string, eventID string) (*jetstream.PubAck, error) {
	body, err := json.Marshal(map[string]any{
		"type":     "payment_failed",
		"severity": "error",
		"summary":  "card processor returned 502",
		"labels":   map[string]string{"region": "eu"},
		"details":  map[string]any{"processor": "acme", "attempts": 3},
		"event_id": eventID, // keep it when you retry: tocsin counts the alert once
	})
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg("alerts.in.billing")
	msg.Data = body
	msg.Header.Set("traceparent", "00-"+randomHex(16)+"-"+randomHex(8)+"-01")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// WithMsgID sets Nats-Msg-Id: JetStream drops a re-send within its duplicate window.
	return js.PublishMsg(ctx, msg, jetstream.WithMsgID(eventID))
}

func main() {
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	eventID := randomHex(10)
	ack, err := publish(url, eventID)
	if err != nil {
		// Not stored: keep the event (with its event_id) and publish it again later.
		fmt.Fprintf(os.Stderr, "alert %s not stored: %v\n", eventID, err)
		os.Exit(1)
	}
	fmt.Printf("stored %s: stream %s seq %d\n", eventID, ack.Stream, ack.Sequence)
}
