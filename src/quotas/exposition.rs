//! `/metrics` for quotas: requests refused (and, in shadow mode, that would have been) per
//! quota, read from the ledger at each scrape. Quota names come from the settings file, so the
//! `quota` label is bounded.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::Ledger;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    quota: String,
}

/// Register with [`Registry::register_collector`](prometheus_client::registry::Registry):
/// `sluice_quota_refused_total{quota}` and `sluice_quota_would_refuse_total{quota}`.
#[derive(Clone)]
pub struct QuotaCollector {
    ledger: Arc<Ledger>,
}

impl QuotaCollector {
    pub fn new(ledger: Arc<Ledger>) -> QuotaCollector {
        QuotaCollector { ledger }
    }
}

impl std::fmt::Debug for QuotaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuotaCollector")
    }
}

impl Collector for QuotaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let refusals = self.ledger.refusals();
        if refusals.is_empty() {
            return Ok(());
        }
        type Pick = fn(&super::QuotaRefusals) -> u64;
        let families: [(&str, &str, Pick); 2] = [
            ("quota_refused", "Requests refused by a quota", |r| {
                r.refused
            }),
            (
                "quota_would_refuse",
                "Requests a shadow-mode quota would have refused",
                |r| r.would_refuse,
            ),
        ];
        for (name, help, pick) in families {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for quota in &refusals {
                let labels = QuotaLabels {
                    quota: quota.quota.clone(),
                };
                ConstCounter::new(pick(quota)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::quotas::settings::tests::quotas;
    use crate::quotas::RequestSubjects;

    #[test]
    fn refusals_are_exposed_per_quota() {
        let ledger = Arc::new(Ledger::new(
            quotas(
                "[[quotas]]\nname = \"one\"\nmax_concurrent = 1\n\
                 [[quotas]]\nname = \"watch\"\nmax_concurrent = 1\nmode = \"shadow\"\n",
            )
            .unwrap(),
        ));
        let now: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let held = ledger.admit(&RequestSubjects::default(), now).unwrap();
        for _ in 0..3 {
            assert!(ledger.admit(&RequestSubjects::default(), now).is_err());
        }
        drop(held);
        let mut registry = Registry::with_prefix("sluice");
        registry.register_collector(Box::new(QuotaCollector::new(ledger)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("# TYPE sluice_quota_refused counter"),
            "{text}"
        );
        assert!(
            text.contains("sluice_quota_refused_total{quota=\"one\"} 3"),
            "{text}"
        );
        // Refused by "one" first, the requests never reached the shadow quota.
        assert!(
            text.contains("sluice_quota_would_refuse_total{quota=\"watch\"} 0"),
            "{text}"
        );
    }
}
