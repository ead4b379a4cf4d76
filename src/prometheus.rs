//! The counters as a Prometheus collector (feature `prometheus`, on by
//! default): [`WsClient::register_metrics`](crate::WsClient::register_metrics).
//!
//! The collector reads a [`MetricsSnapshot`] of each endpoint at scrape
//! time, so the message path pays nothing for it. Every family is written
//! once, with one sample per endpoint told apart by the `namespace` label.
//!
//! **Adding a metric** is one row in [`FAMILIES`]: a field of
//! `MetricsSnapshot` (add it there first, in `metrics.rs`) with its name,
//! help and kind. Names follow Prometheus conventions: the `edk_ws_` prefix,
//! base units in the name (`_seconds`, `_bytes`), and counters get `_total`
//! from the encoder (OpenMetrics writes the family name without it).

use enum_map::Enum;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::metrics::{HistogramSnapshot, MetricsSnapshot};
use crate::protocol::close::DisconnectReason;

/// One endpoint as the collector sees it: its `namespace` label and its
/// snapshot, or `None` once the endpoint is gone.
pub(crate) type Source = Box<dyn Fn() -> Option<(String, MetricsSnapshot)> + Send + Sync>;

/// How a family's samples are read from a snapshot.
enum Read {
    Counter(fn(&MetricsSnapshot) -> u64),
    Gauge(fn(&MetricsSnapshot) -> u64),
    /// A counter per value of one label.
    CounterBy(
        &'static str,
        fn(&MetricsSnapshot) -> Vec<(&'static str, u64)>,
    ),
    /// A histogram whose values are divided by `f64` into the base unit.
    Histogram(f64, fn(&MetricsSnapshot) -> &HistogramSnapshot),
    /// A histogram per value of one label.
    HistogramBy(
        &'static str,
        f64,
        fn(&MetricsSnapshot) -> Vec<(&'static str, &HistogramSnapshot)>,
    ),
}

/// Nanoseconds per second.
const NS: f64 = 1e9;

/// Every family: name (counters without `_total`), help, how to read it.
const FAMILIES: &[(&str, &str, Read)] = &[
    ("edk_ws_connections", "WebSocket connections open now.", Read::Gauge(|s| s.connections)),
    ("edk_ws_handshakes_accepted", "Handshakes answered 101.", Read::Counter(|s| s.accepted)),
    ("edk_ws_handshakes_refused", "Handshakes refused, by HTTP status.", Read::CounterBy("status", |s| {
        let r = &s.refused;
        vec![("400", r.bad_request), ("401", r.unauthorized), ("403", r.forbidden), ("409", r.conflict), ("426", r.upgrade_required), ("503", r.shutting_down)]
    })),
    ("edk_ws_handshake_duration_seconds", "Time from an upgrade request to its 101 (auth and admission included).", Read::Histogram(NS, |s| &s.handshake_duration)),
    ("edk_ws_disconnects", "Connections ended, by reason.", Read::CounterBy("reason", |s| {
        (0..DisconnectReason::LENGTH)
            .map(DisconnectReason::from_usize)
            .map(|r| (r.as_str(), s.disconnects.get(r)))
            .collect()
    })),
    ("edk_ws_messages_received", "Binary frames received from clients.", Read::Counter(|s| s.messages_in)),
    ("edk_ws_received_bytes", "Bytes of binary frames received.", Read::Counter(|s| s.bytes_in)),
    ("edk_ws_messages_sent", "Messages written to clients.", Read::Counter(|s| s.messages_out)),
    ("edk_ws_sent_bytes", "Bytes of messages written to clients.", Read::Counter(|s| s.bytes_out)),
    ("edk_ws_send_failures", "Sends that could not be queued, by kind.", Read::CounterBy("kind", |s| {
        let f = &s.send_failures;
        vec![("not_connected", f.not_connected), ("queue_full", f.queue_full), ("closed", f.closed), ("shutting_down", f.shutting_down), ("too_large", f.too_large), ("unavailable", f.unavailable)]
    })),
    ("edk_ws_slow_consumer_closes", "Connections closed with 4003 because their send queue overflowed.", Read::Counter(|s| s.send_failures.queue_full)),
    ("edk_ws_handler_panics", "Handlers, routes and policy hooks that panicked (caught).", Read::Counter(|s| s.handler_panics)),
    ("edk_ws_tcp_nodelay_unavailable", "Connections served without TCP_NODELAY.", Read::Counter(|s| s.tcp_nodelay_unavailable)),
    ("edk_ws_inbound_over_budget", "Inbound messages over their connection's budget, by outcome: answered Error RATE_LIMITED (module requests and messages with an id), or dropped unanswered.", Read::CounterBy("outcome", |s| {
        vec![("rate_limited", s.inbound_rate_limited), ("dropped", s.inbound_dropped)]
    })),
    ("edk_ws_messages_over_entry_limits", "Frames refused with close 1009 before decoding (metadata or map/list entries over their limits).", Read::Counter(|s| s.messages_over_entry_limits)),
    ("edk_ws_pending_handshakes", "Connections accepted by edk_ws::serve and not yet upgraded, now.", Read::Gauge(|s| s.pending_handshakes)),
    ("edk_ws_handshake_timeouts", "Connections closed by edk_ws::serve without a complete request head within handshake_timeout.", Read::Counter(|s| s.handshake_timeouts)),
    ("edk_ws_pending_refused", "Connections answered 503 at accept by edk_ws::serve, by the cap reached: all pending handshakes, or those of one address.", Read::CounterBy("cap", |s| {
        vec![("total", s.pending_cap_refused), ("per_ip", s.pending_ip_cap_refused)]
    })),
    ("edk_ws_malformed_requests", "HTTP requests that did not parse or whose head was over max_header_bytes (400/431).", Read::Counter(|s| s.malformed_requests)),
    ("edk_ws_message_handling_duration_seconds", "Time to handle an inbound message, by what handled it; sampled: one message in 16 per worker thread.", Read::HistogramBy("kind", NS, |s| {
        let h = &s.handling_duration;
        vec![("request", &h.requests), ("route", &h.routes), ("handlers", &h.handlers)]
    })),
    ("edk_ws_send_batch_messages", "Messages a connection's writer found queued when it woke (send queue depth), one observation per batch.", Read::Histogram(1.0, |s| &s.send_batches)),
    ("edk_ws_queued_messages", "Messages waiting in send queues now.", Read::Gauge(|s| s.queued_messages)),
    ("edk_ws_queued_bytes", "Bytes waiting in send queues now.", Read::Gauge(|s| s.queued_bytes)),
    ("edk_ws_queue_depth_max_messages", "The deepest send queue now.", Read::Gauge(|s| s.max_queue_depth)),
    ("edk_ws_rooms", "Rooms now.", Read::Gauge(|s| s.rooms)),
    ("edk_ws_room_members", "Room memberships now.", Read::Gauge(|s| s.room_members)),
    ("edk_ws_activities", "Users with a non-offline activity now.", Read::Gauge(|s| s.activities)),
    ("edk_ws_backplane_down", "1 when clustered and the backplane (Redis) is unreachable now.", Read::Gauge(|s| u64::from(s.backplane_down))),
    ("edk_ws_backplane_publish_errors", "Cross-node publishes lost (Redis unreachable or publish queue full).", Read::Counter(|s| s.backplane_publish_errors)),
    ("edk_ws_backplane_slow_calls", "Redis calls over redis_timeout while Redis answered (this node busy); they failed.", Read::Counter(|s| s.backplane_slow_calls)),
];

/// The collector of one or more endpoints.
pub(crate) struct EndpointsCollector {
    sources: Vec<Source>,
}

impl EndpointsCollector {
    pub fn new(sources: Vec<Source>) -> Self {
        EndpointsCollector { sources }
    }
}

impl std::fmt::Debug for EndpointsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointsCollector")
            .field("endpoints", &self.sources.len())
            .finish()
    }
}

impl Collector for EndpointsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snaps: Vec<(String, MetricsSnapshot)> =
            self.sources.iter().filter_map(|s| s()).collect();
        if snaps.is_empty() {
            return Ok(());
        }
        for (name, help, read) in FAMILIES {
            let kind = match read {
                Read::Counter(_) | Read::CounterBy(..) => MetricType::Counter,
                Read::Gauge(_) => MetricType::Gauge,
                Read::Histogram(..) | Read::HistogramBy(..) => MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (ns, s) in &snaps {
                let ns = ns.as_str();
                match read {
                    Read::Counter(f) => family
                        .encode_family(&[("namespace", ns)])?
                        .encode_counter::<NoLabelSet, _, u64>(&f(s), None)?,
                    Read::Gauge(f) => family
                        .encode_family(&[("namespace", ns)])?
                        .encode_gauge(&f(s))?,
                    Read::CounterBy(label, f) => {
                        for (value, n) in f(s) {
                            family
                                .encode_family(&[("namespace", ns), (label, value)])?
                                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                        }
                    }
                    Read::Histogram(per_unit, f) => {
                        histogram(family.encode_family(&[("namespace", ns)])?, f(s), *per_unit)?
                    }
                    Read::HistogramBy(label, per_unit, f) => {
                        for (value, h) in f(s) {
                            let labels = [("namespace", ns), (label, value)];
                            histogram(family.encode_family(&labels)?, h, *per_unit)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes `h` (cumulative, integer units; `per_unit` of them make the base
/// unit) as the encoder wants it: per-bucket counts, ending with `+Inf`.
fn histogram(
    mut m: prometheus_client::encoding::MetricEncoder<'_>,
    h: &HistogramSnapshot,
    per_unit: f64,
) -> Result<(), std::fmt::Error> {
    let mut buckets = Vec::with_capacity(h.buckets.len() + 1);
    let mut below = 0;
    for &(bound, cumulative) in &h.buckets {
        buckets.push((bound as f64 / per_unit, cumulative.saturating_sub(below)));
        below = cumulative;
    }
    buckets.push((f64::INFINITY, h.count.saturating_sub(below)));
    m.encode_histogram::<NoLabelSet>(h.sum as f64 / per_unit, h.count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn scrape(sources: Vec<Source>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(EndpointsCollector::new(sources)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn two_endpoints_share_each_family_and_differ_by_namespace() {
        let source = |ns: &'static str, n: u64| -> Source {
            Box::new(move || {
                let mut s = MetricsSnapshot {
                    connections: n,
                    handshake_duration: HistogramSnapshot {
                        buckets: vec![(1_000_000, 1), (5_000_000, 2)],
                        count: 3,
                        sum: 9_000_000,
                    },
                    ..MetricsSnapshot::default()
                };
                s.send_failures.queue_full = n;
                s.inbound_dropped = n + 2;
                s.pending_ip_cap_refused = n;
                Some((ns.to_owned(), s))
            })
        };
        let text = scrape(vec![
            source("layout", 2),
            source("lobby", 5),
            Box::new(|| None),
        ]);
        assert_eq!(
            text.matches("# TYPE edk_ws_connections gauge").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("edk_ws_connections{namespace=\"layout\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("edk_ws_connections{namespace=\"lobby\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "edk_ws_send_failures_total{namespace=\"lobby\",kind=\"queue_full\"} 5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("edk_ws_slow_consumer_closes_total{namespace=\"layout\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "edk_ws_inbound_over_budget_total{namespace=\"lobby\",outcome=\"dropped\"} 7\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("edk_ws_pending_refused_total{namespace=\"layout\",cap=\"per_ip\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "edk_ws_disconnects_total{namespace=\"lobby\",reason=\"slow_consumer\"} 0\n"
            ),
            "{text}"
        );
        // Cumulative buckets in seconds; +Inf is the count.
        assert!(
            text.contains(
                "edk_ws_handshake_duration_seconds_bucket{le=\"0.001\",namespace=\"layout\"} 1\n"
            ) || text.contains(
                "edk_ws_handshake_duration_seconds_bucket{namespace=\"layout\",le=\"0.001\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("le=\"+Inf\"} 3\n")
                || text.contains("le=\"+Inf\",namespace=\"layout\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("edk_ws_handshake_duration_seconds_sum{namespace=\"layout\"} 0.009\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
