//! A Modbus device simulator: serves profiles or a config's devices over real TCP sockets,
//! RTU-over-TCP sockets and RTU on pseudo-terminals, with values that behave like a plant and
//! faults that can be injected per device. It is the basis of the tests and of the demo.
//!
//! Each served endpoint is a [`Bus`]: the devices reachable there, by unit id. On TCP an
//! unknown unit gets exception 0x0B (gateway target failed to respond), as a gateway would;
//! on a serial bus it gets silence, as on a real RS-485 line.

pub mod behaviour;
pub mod device;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::acquire::spec::{Fleet, Function, Link, TcpEndpoint, Transport};
use crate::clock::{Clock, SystemClock};
pub use device::{Answer, Fault, SimDevice, WriteAnswer};

/// The devices answering on one endpoint, by unit id.
#[derive(Debug, Default)]
pub struct Bus {
    units: HashMap<u8, Arc<SimDevice>>,
    serial: bool,
}

impl Bus {
    /// An empty bus; `serial` selects silence (RTU) or exception 0x0B (TCP) for unknown units.
    pub fn new(serial: bool) -> Self {
        Self {
            units: HashMap::new(),
            serial,
        }
    }

    /// Adds a device at its unit id.
    pub fn add(&mut self, device: Arc<SimDevice>) {
        self.units.insert(device.unit_id(), device);
    }

    /// The devices on the bus.
    pub fn devices(&self) -> impl Iterator<Item = &Arc<SimDevice>> {
        self.units.values()
    }
}

/// A tokio-modbus service answering for a [`Bus`].
#[derive(Clone)]
struct BusService {
    bus: Arc<Bus>,
    clock: Arc<dyn Clock>,
}

type Reply = Result<Option<Response>, ExceptionCode>;

fn exception(code: u8) -> ExceptionCode {
    match code {
        1 => ExceptionCode::IllegalFunction,
        2 => ExceptionCode::IllegalDataAddress,
        3 => ExceptionCode::IllegalDataValue,
        4 => ExceptionCode::ServerDeviceFailure,
        6 => ExceptionCode::ServerDeviceBusy,
        0x0B => ExceptionCode::GatewayTargetDevice,
        other => ExceptionCode::new(other),
    }
}

impl tokio_modbus::server::Service for BusService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let Some(device) = self.bus.units.get(&req.slave).cloned() else {
            let serial = self.bus.serial;
            return Box::pin(async move {
                if serial {
                    Ok(None)
                } else {
                    Err(ExceptionCode::GatewayTargetDevice)
                }
            });
        };
        let clock = self.clock.clone();
        Box::pin(async move {
            let Some(delay) = device.delay() else {
                return Ok(None);
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let (function, address, count) = match req.request {
                Request::ReadCoils(a, n) => (Function::Coil, a, n),
                Request::ReadDiscreteInputs(a, n) => (Function::DiscreteInput, a, n),
                Request::ReadHoldingRegisters(a, n) => (Function::Holding, a, n),
                Request::ReadInputRegisters(a, n) => (Function::Input, a, n),
                write => return serve_write(&device, write, clock.now()),
            };
            match device.read(function, address, count, clock.now()) {
                Answer::Silence => Ok(None),
                Answer::Exception(code) => Err(exception(code)),
                Answer::Words(w) => Ok(Some(match function {
                    Function::Input => Response::ReadInputRegisters(w),
                    _ => Response::ReadHoldingRegisters(w),
                })),
                Answer::Bits(b) => Ok(Some(match function {
                    Function::Coil => Response::ReadCoils(b),
                    _ => Response::ReadDiscreteInputs(b),
                })),
            }
        })
    }
}

/// Answers functions 05, 06, 15 and 16; any other function is illegal here.
fn serve_write(device: &SimDevice, request: Request<'_>, now: crate::model::Timestamp) -> Reply {
    let (function, address, words, response) = match request {
        Request::WriteSingleCoil(a, on) => (
            Function::Coil,
            a,
            vec![u16::from(on)],
            Response::WriteSingleCoil(a, on),
        ),
        Request::WriteMultipleCoils(a, bits) => (
            Function::Coil,
            a,
            bits.iter().map(|b| u16::from(*b)).collect(),
            Response::WriteMultipleCoils(a, u16::try_from(bits.len()).unwrap_or(u16::MAX)),
        ),
        Request::WriteSingleRegister(a, w) => (
            Function::Holding,
            a,
            vec![w],
            Response::WriteSingleRegister(a, w),
        ),
        Request::WriteMultipleRegisters(a, words) => (
            Function::Holding,
            a,
            words.to_vec(),
            Response::WriteMultipleRegisters(a, u16::try_from(words.len()).unwrap_or(u16::MAX)),
        ),
        _ => return Err(ExceptionCode::IllegalFunction),
    };
    match device.write(function, address, &words, now) {
        WriteAnswer::Done => Ok(Some(response)),
        WriteAnswer::Exception(code) => Err(exception(code)),
        WriteAnswer::Silence => Ok(None),
    }
}

/// Serves `bus` as Modbus TCP on `listener` until cancelled.
pub async fn serve_tcp(listener: TcpListener, bus: Arc<Bus>, cancel: CancellationToken) {
    let service = BusService {
        bus,
        clock: Arc::new(SystemClock),
    };
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let on_connected = |stream, addr| {
        let service = service.clone();
        async move {
            tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, |_| {
                Ok(Some(service.clone()))
            })
        }
    };
    let on_error = |err| debug!(error = %err, "Simulator connection ended.");
    if let Err(err) = server
        .serve_until(&on_connected, on_error, cancel.cancelled_owned())
        .await
    {
        warn!(error = %err, "Simulator TCP server stopped.");
    }
}

/// Serves `bus` as RTU frames over TCP on `listener` until cancelled.
pub async fn serve_rtu_over_tcp(listener: TcpListener, bus: Arc<Bus>, cancel: CancellationToken) {
    let service = BusService {
        bus,
        clock: Arc::new(SystemClock),
    };
    let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
    let on_connected = |stream, addr| {
        let service = service.clone();
        async move {
            tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(stream, addr, |_| {
                Ok(Some(service.clone()))
            })
        }
    };
    let on_error = |err| debug!(error = %err, "Simulator connection ended.");
    if let Err(err) = server
        .serve_until(&on_connected, on_error, cancel.cancelled_owned())
        .await
    {
        warn!(error = %err, "Simulator RTU-over-TCP server stopped.");
    }
}

/// Serves `bus` as RTU on `port` (a serial port or the master side of a pty) until cancelled.
pub async fn serve_rtu(port: tokio_serial::SerialStream, bus: Arc<Bus>, cancel: CancellationToken) {
    let service = BusService {
        bus,
        clock: Arc::new(SystemClock),
    };
    let server = tokio_modbus::server::rtu::Server::new(port);
    if let Err(err) = server.serve_until(service, cancel.cancelled_owned()).await {
        warn!(error = %err, "Simulator RTU server stopped.");
    }
}

/// A pseudo-terminal pair: the simulator serves the master, clients open `path`.
pub struct Pty {
    /// The master side, for [`serve_rtu`].
    pub master: tokio_serial::SerialStream,
    /// Kept open so the pty stays up while clients come and go.
    pub slave: tokio_serial::SerialStream,
    /// The slave side's device path, e.g. `/dev/pts/7`.
    pub path: PathBuf,
}

/// Opens a pseudo-terminal pair.
///
/// # Errors
/// When the system has no free ptys.
pub fn open_pty() -> io::Result<Pty> {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().map_err(io::Error::other)?;
    let path = slave
        .name()
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other("pty has no name"))?;
    Ok(Pty {
        master,
        slave,
        path,
    })
}

/// Where to serve a config's links; the links are rewritten to point at what was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    /// TCP links on 127.0.0.1 with a free port instead of their configured address.
    pub tcp_ephemeral: bool,
    /// Serial links on new pseudo-terminals instead of their configured ports.
    pub rtu_pty: bool,
}

impl Bind {
    /// Everything on loopback and ptys: for tests and the demo.
    pub const LOOPBACK: Bind = Bind {
        tcp_ephemeral: true,
        rtu_pty: true,
    };
    /// Everything where the config says.
    pub const AS_CONFIGURED: Bind = Bind {
        tcp_ephemeral: false,
        rtu_pty: false,
    };
}

/// A running simulator for a config's devices.
pub struct Simulator {
    devices: HashMap<String, Arc<SimDevice>>,
    /// The fleet's links, rewritten to reach the simulator where [`Bind`] moved them.
    pub links: Vec<Link>,
    /// What each link is served on, for people: (link, address or pty path).
    pub endpoints: Vec<(String, String)>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    _ptys: Vec<tokio_serial::SerialStream>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// The UTC offset of `timezone` now, in hours, for the load shape.
fn utc_offset_hours(timezone: chrono_tz::Tz, clock: &dyn Clock) -> f64 {
    use chrono::Offset;
    use chrono::TimeZone;
    let now = clock.now();
    chrono::DateTime::from_timestamp_millis(now.0)
        .map(|t| {
            timezone
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        })
        .map_or(8.0, |s| f64::from(s) / 3600.0)
}

impl Simulator {
    /// Serves every device of `fleet`, whose plant runs on local time in `timezone`.
    ///
    /// # Errors
    /// When a socket cannot be bound or a serial port or pty opened; names the link.
    pub async fn start(fleet: Fleet<'_>, timezone: chrono_tz::Tz, bind: Bind) -> io::Result<Self> {
        let mut links = fleet.links.to_vec();
        let offset = utc_offset_hours(timezone, &SystemClock);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut devices = HashMap::new();
        let mut endpoints = Vec::new();
        let mut ptys = Vec::new();
        for (index, link) in links.iter_mut().enumerate() {
            let mut bus = Bus::new(matches!(
                link.transport,
                Transport::Rtu(_) | Transport::RtuOverTcp { .. }
            ));
            for d in fleet.devices.iter().filter(|d| d.link == index) {
                let sim = Arc::new(SimDevice::new(d, offset));
                devices.insert(d.name.to_string(), sim.clone());
                bus.add(sim);
            }
            let bus = Arc::new(bus);
            let name = link.name.to_string();
            let context = |e: io::Error, what: String| {
                io::Error::new(e.kind(), format!("link `{name}`: {what}: {e}"))
            };
            match &mut link.transport {
                Transport::Tcp(e) | Transport::RtuOverTcp { endpoint: e, .. } => {
                    let listener = bind_tcp(e, bind)
                        .await
                        .map_err(|err| context(err, format!("cannot listen on {e}")))?;
                    let addr = listener.local_addr()?;
                    if bind.tcp_ephemeral {
                        e.host = addr.ip().to_string();
                        e.port = addr.port();
                    }
                    endpoints.push((name.clone(), addr.to_string()));
                    let c = cancel.child_token();
                    if matches!(link.transport, Transport::Tcp(_)) {
                        tasks.spawn(serve_tcp(listener, bus, c));
                    } else {
                        tasks.spawn(serve_rtu_over_tcp(listener, bus, c));
                    }
                }
                Transport::Rtu(s) => {
                    let port = if bind.rtu_pty {
                        let pty =
                            open_pty().map_err(|err| context(err, "cannot open a pty".into()))?;
                        s.path = pty.path.clone();
                        ptys.push(pty.slave);
                        pty.master
                    } else {
                        tokio_serial::SerialStream::open(&tokio_serial::new(
                            s.path.to_string_lossy(),
                            s.baud,
                        ))
                        .map_err(|err| {
                            context(
                                io::Error::other(err),
                                format!("cannot open {}", s.path.display()),
                            )
                        })?
                    };
                    endpoints.push((name.clone(), s.path.display().to_string()));
                    tasks.spawn(serve_rtu(port, bus, cancel.child_token()));
                }
            }
        }
        Ok(Self {
            devices,
            links,
            endpoints,
            cancel,
            tasks,
            _ptys: ptys,
        })
    }

    /// The simulated device called `name`.
    pub fn device(&self, name: &str) -> Option<&Arc<SimDevice>> {
        self.devices.get(name)
    }

    /// All simulated devices.
    pub fn devices(&self) -> impl Iterator<Item = &Arc<SimDevice>> {
        self.devices.values()
    }

    /// Stops serving and waits for the servers to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn bind_tcp(e: &TcpEndpoint, bind: Bind) -> io::Result<TcpListener> {
    if bind.tcp_ephemeral {
        TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
    } else {
        TcpListener::bind((e.host.as_str(), e.port)).await
    }
}
