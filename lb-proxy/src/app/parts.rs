//! The App's optional parts: each runs when the file asks for it and the
//! build has its feature, the DNS responder (`[dns]`, feature `dns`) and the
//! interface VIPs (`vip_mode = "interface"`, feature `vip`). A file that asks
//! for a part this build lacks is refused at start, never ignored.

use lb_config::Config;
use tracing::warn;

use crate::dataplane::DataPlane;
use crate::error::Error;
use crate::lifecycle::Tasks;

/// The cluster DNS responder, when `[dns]` asks for one.
#[derive(Debug, Clone, Default)]
pub(crate) struct DnsPart {
    #[cfg(feature = "dns")]
    dns: Option<crate::ops::dns::Dns>,
}

impl DnsPart {
    /// Starts the responder on `tasks` if `config` has `[dns]`, on the
    /// sockets handed over in `sockets` if there are.
    pub(crate) async fn start(
        config: &Config,
        dataplane: &DataPlane,
        tasks: &Tasks,
        sockets: &crate::handover::Sockets,
    ) -> Result<DnsPart, Error> {
        #[cfg(feature = "dns")]
        {
            use crate::ops::dns::{Dns, DnsOptions};
            let (Some(settings), Some(options)) = (&config.dns, DnsOptions::from_config(config))
            else {
                return Ok(DnsPart::default());
            };
            let dns = Dns::start_in(
                settings.listen,
                dataplane.table(),
                options,
                tasks.child(),
                sockets,
            )
            .await
            .map_err(Error::Dns)?;
            dns.set_not_proxied(config.node.clone(), config.not_proxied.clone());
            Ok(DnsPart { dns: Some(dns) })
        }
        #[cfg(not(feature = "dns"))]
        {
            let _ = (dataplane, tasks, sockets);
            match config.dns {
                Some(_) => Err(Error::Unsupported {
                    what: "[dns] (the cluster DNS responder)",
                    feature: "dns",
                }),
                None => Ok(DnsPart::default()),
            }
        }
    }

    /// The responder, when it runs.
    #[cfg(feature = "dns")]
    pub(crate) fn get(&self) -> Option<&crate::ops::dns::Dns> {
        self.dns.as_ref()
    }

    /// A new desired state: new options for a running responder; adding or
    /// removing `[dns]` waits for a restart.
    pub(crate) fn reconfigure(&self, config: &Config) {
        #[cfg(feature = "dns")]
        match (&self.dns, crate::ops::dns::DnsOptions::from_config(config)) {
            (Some(dns), Some(options)) => {
                dns.set_options(options);
                dns.set_not_proxied(config.node.clone(), config.not_proxied.clone());
            }
            (None, Some(_)) | (Some(_), None) => {
                warn!("[dns] added or removed; it takes effect at the next restart")
            }
            (None, None) => {}
        }
        #[cfg(not(feature = "dns"))]
        if config.dns.is_some() {
            warn!("[dns] needs lb-proxy's `dns` feature, which this build does not have");
        }
    }

    /// Stops the responder and waits for its tasks.
    pub(crate) async fn stop(&self) {
        #[cfg(feature = "dns")]
        if let Some(dns) = &self.dns {
            dns.shutdown().await;
        }
    }
}

/// `vip_mode = "interface"`: the addresses lb-proxy adds and announces.
#[derive(Debug, Clone, Default)]
pub(crate) struct VipPart {
    #[cfg(feature = "vip")]
    vips: Option<crate::control::vip::Vips>,
}

impl VipPart {
    /// Takes hold of the VIP interface on `tasks` if `config` asks for
    /// interface mode.
    /// With `adopt` (a takeover), the addresses the previous owner added
    /// are kept rather than removed and added again.
    pub(crate) async fn start(
        config: &Config,
        dataplane: &DataPlane,
        tasks: &Tasks,
        adopt: bool,
    ) -> Result<VipPart, Error> {
        if config.vip_mode != lb_config::VipMode::Interface {
            return Ok(VipPart::default());
        }
        #[cfg(feature = "vip")]
        {
            let options = crate::control::vip::VipOptions {
                interface: config.vip_interface.clone(),
                announce_interface: config.announce_interface.clone(),
                adopt,
            };
            crate::control::vip::Vips::start(dataplane, options, tasks.child())
                .await
                .map(|vips| VipPart { vips: Some(vips) })
                .map_err(Error::Vip)
        }
        #[cfg(not(feature = "vip"))]
        {
            let _ = (dataplane, tasks, adopt);
            Err(Error::Unsupported {
                what: "vip_mode = \"interface\"",
                feature: "vip",
            })
        }
    }

    /// The VIP manager, in interface mode.
    #[cfg(feature = "vip")]
    pub(crate) fn get(&self) -> Option<&crate::control::vip::Vips> {
        self.vips.as_ref()
    }

    /// Removes the addresses lb-proxy added and waits for its tasks.
    pub(crate) async fn stop(&self) {
        #[cfg(feature = "vip")]
        if let Some(vips) = &self.vips {
            vips.stop().await;
        }
    }

    /// Stops, leaving the addresses to the process that took over.
    pub(crate) async fn hand_over(&self) {
        #[cfg(feature = "vip")]
        if let Some(vips) = &self.vips {
            vips.hand_over().await;
        }
    }
}

/// The `[node]` settings interface mode starts with, to tell a reload that
/// changes them to wait for a restart.
pub(crate) fn vip_settings(config: &Config) -> (lb_config::VipMode, String, String) {
    (
        config.vip_mode,
        config.vip_interface.clone(),
        config.announce_interface.clone(),
    )
}
