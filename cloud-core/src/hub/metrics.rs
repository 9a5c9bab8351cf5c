//! The hub's per-site sync metrics, in the API's registry (`/metrics`): whether a site is
//! connected, the downlink revision it acknowledged and how far that is behind the store, the
//! bytes its connection carried, and the uplink changes applied and refused.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// A site.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    /// The EdgeSite's name.
    pub site: String,
}

/// A site and a direction (`up`: site to region, `down`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteDirection {
    /// The EdgeSite's name.
    pub site: String,
    /// `up` or `down`.
    pub direction: String,
}

/// The hub's metrics.
#[derive(Clone, Default)]
pub struct SyncMetrics {
    connected: Family<SiteLabel, Gauge>,
    acked: Family<SiteLabel, Gauge>,
    lag: Family<SiteLabel, Gauge>,
    bytes: Family<SiteDirection, Gauge>,
    uplink: Family<SiteLabel, Counter>,
    refused: Family<SiteLabel, Counter>,
}

impl SyncMetrics {
    /// Register them in `m`.
    pub fn register(m: &apiserver::metrics::Metrics) -> Self {
        let s = SyncMetrics::default();
        m.register(
            "atoll_sync_site_connected",
            "Sessions this replica holds with the site (1 connected, 0 not)",
            s.connected.clone(),
        );
        m.register(
            "atoll_sync_site_acked_revision",
            "The downlink revision the site acknowledged last",
            s.acked.clone(),
        );
        m.register(
            "atoll_sync_site_lag_revisions",
            "How far the site's acknowledged revision was behind the store when it acknowledged",
            s.lag.clone(),
        );
        m.register(
            "atoll_sync_site_bytes",
            "Bytes the site's current connection carried, by direction",
            s.bytes.clone(),
        );
        m.register(
            "atoll_sync_site_uplink_changes",
            "Changes from the site applied",
            s.uplink.clone(),
        );
        m.register(
            "atoll_sync_site_uplink_refused",
            "Changes from the site refused",
            s.refused.clone(),
        );
        s
    }

    fn site(site: &str) -> SiteLabel {
        SiteLabel {
            site: site.to_string(),
        }
    }

    /// A session with `site` began (`true`) or ended.
    pub fn connected(&self, site: &str, up: bool) {
        let g = self.connected.get_or_create(&Self::site(site));
        if up {
            g.inc();
        } else {
            g.dec();
        }
    }

    /// `site` acknowledged `rv` with the store at `current`; its connection's byte counts.
    pub fn acked(&self, site: &str, rv: u64, current: u64, conn: &quinn::Connection) {
        let l = Self::site(site);
        self.acked
            .get_or_create(&l)
            .set(i64::try_from(rv).unwrap_or(i64::MAX));
        self.lag
            .get_or_create(&l)
            .set(i64::try_from(current.saturating_sub(rv)).unwrap_or(i64::MAX));
        let stats = conn.stats();
        for (direction, n) in [("up", stats.udp_rx.bytes), ("down", stats.udp_tx.bytes)] {
            self.bytes
                .get_or_create(&SiteDirection {
                    site: site.to_string(),
                    direction: direction.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Uplink changes of `site` applied and refused.
    pub fn uplink(&self, site: &str, applied: usize, refused: usize) {
        let l = Self::site(site);
        self.uplink.get_or_create(&l).inc_by(applied as u64);
        self.refused.get_or_create(&l).inc_by(refused as u64);
    }
}
