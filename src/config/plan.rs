//! The resolved configuration: typed, validated, with no optional values left.

use crate::model::Name;

pub use super::raw::ReportMode;
pub use crate::acquire::spec::{
    Device, Fleet, Function, Link, Parity, Point, SerialSettings, TcpEndpoint, Transport,
};
use crate::pipeline::PipelineSpec;
use crate::process::report::DeviceReport;
pub use crate::process::report::Report;
use crate::replay::ReplaySpec;

/// Everything the daemon needs, valid as a whole.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Who this gateway is.
    pub gateway: Gateway,
    /// Links in file order.
    pub links: Vec<Link>,
    /// Devices in file order.
    pub devices: Vec<Device>,
    /// Where telemetry goes, one entry per `[[mqtt]]` sink; none polls without delivering
    /// (commissioning).
    pub mqtt: Vec<super::daemon::Mqtt>,
    /// The state file.
    pub store: super::daemon::Store,
    /// InfluxDB copy of the telemetry; `None` when not configured.
    pub influx: Option<super::influx::Influx>,
    /// Alarm rules, each expanded to its targets.
    pub rules: Vec<super::rules::Rule>,
    /// Engine-wide alarm policy (`[alarms]`).
    pub alarm_policy: super::rules::AlarmPolicy,
    /// Group-chat and HTTP alarm notifiers.
    pub webhooks: Vec<super::webhooks::Webhook>,
    /// Running hours and starts counted per device.
    pub maintenance: Vec<super::maintenance::Maintenance>,
    /// Device health publishing.
    pub health: super::maintenance::Health,
    /// Energy meters, production counters, tariff calendar and coefficients.
    pub energy: super::energy::Energy,
    /// Records for the national energy-monitoring platform; `None` when not configured.
    pub energy_platform: Option<super::platform::EnergyPlatform>,
    /// Who may send downlink commands (`[commands]`).
    pub commands: super::commands::Commands,
    /// Settings that work but expose the plant (`check` prints them, `run` logs them); with
    /// `[gateway] strict_security = true` they are errors instead and never get here.
    pub warnings: Vec<super::ConfigIssue>,
}

impl Plan {
    /// The device called `name`.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name.as_str() == name)
    }

    /// The links and devices, as acquisition and the simulator take them.
    pub fn fleet(&self) -> Fleet<'_> {
        Fleet {
            links: &self.links,
            devices: &self.devices,
        }
    }

    /// This plan with `links` in place of its own, as a simulator serving its devices
    /// rewrites them to reach it.
    pub fn with_links(&self, links: &[Link]) -> Plan {
        Plan {
            links: links.to_vec(),
            ..self.clone()
        }
    }

    /// The devices on link `index`.
    pub fn devices_on(&self, index: usize) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(move |d| d.link == index)
    }
}

/// `[gateway]`, resolved.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Site name.
    pub site: Name,
    /// Gateway id.
    pub id: Name,
    /// Local time zone.
    pub timezone: chrono_tz::Tz,
}

impl Plan {
    /// The pipeline's spec: the ledger's meters, the engine's devices and rules, and each
    /// device's reporting policies.
    pub fn pipeline_spec(&self) -> PipelineSpec {
        PipelineSpec {
            ledger: self
                .energy
                .ledger_spec(&self.devices, self.gateway.timezone),
            engine: self.engine_spec(),
            devices: self
                .devices
                .iter()
                .map(|d| DeviceReport {
                    name: d.name.clone(),
                    points: d.points.iter().map(|p| p.report).collect(),
                    poll_interval: d.poll_interval,
                })
                .collect(),
        }
    }
}

impl Plan {
    /// What `replay` runs a recording through: the pipeline's spec, the devices, the zone and
    /// the ledger interval.
    pub fn replay_spec(&self) -> ReplaySpec {
        ReplaySpec {
            pipeline: self.pipeline_spec(),
            devices: self.devices.clone(),
            timezone: self.gateway.timezone,
            interval: self.energy.interval,
        }
    }
}
