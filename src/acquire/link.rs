//! Transports: open a Modbus client for a link (our own client for Modbus TCP, `mbap.rs`;
//! tokio-modbus for RTU framing), and run one read or write with a timeout.
//!
//! tokio-modbus has no timeout of its own, and a TCP context reused after a timeout mismatches
//! headers (tokio-modbus #324), so every transaction is wrapped in a timeout and a connection
//! that timed out or failed is dropped and reopened for the next transaction.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::slave::{Slave, SlaveContext};

use super::mbap::TcpReader;
use super::spec::{Function, Link, Parity, TcpEndpoint, Transport};
use super::write::WriteFunction;

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("link `{link}`: cannot connect to {endpoint}: {source}")]
    Tcp {
        /// The link.
        link: String,
        /// Where.
        endpoint: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TCP connect took longer than the link's connect timeout.
    #[error("link `{link}`: no TCP connection to {endpoint} within {timeout_ms} ms")]
    TcpTimeout {
        /// The link.
        link: String,
        /// Where.
        endpoint: String,
        /// The timeout.
        timeout_ms: u128,
    },
    /// The serial port could not be opened.
    #[error("link `{link}`: cannot open serial port {path}: {source}")]
    Serial {
        /// The link.
        link: String,
        /// The port.
        path: String,
        /// Why.
        #[source]
        source: tokio_serial::Error,
    },
}

/// The result of one read transaction.
#[derive(Debug)]
pub enum ReadResult {
    /// Registers.
    Words(Vec<u16>),
    /// Bits.
    Bits(Vec<bool>),
    /// The device answered with an exception code.
    Exception(u8),
    /// No answer within the timeout.
    Timeout,
    /// The transport failed (reset, garbage frame, mismatched header).
    Failed(String),
}

/// One write transaction: function, first address and what to write there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusWrite {
    /// 05, 06, 15 or 16.
    pub function: WriteFunction,
    /// First coil or register, 0-based.
    pub address: u16,
    /// The coils or registers; one for 05 and 06.
    pub data: WriteData,
}

/// What a write carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteData {
    /// Coils.
    Bits(Vec<bool>),
    /// Registers.
    Words(Vec<u16>),
}

impl ModbusWrite {
    /// The request PDU (function code onward), as Modbus Application Protocol v1.1b3 §6.5,
    /// §6.6, §6.11 and §6.12 frame it.
    pub fn pdu(&self) -> Vec<u8> {
        let mut pdu = vec![self.function.code()];
        pdu.extend_from_slice(&self.address.to_be_bytes());
        match (&self.data, self.function) {
            (WriteData::Bits(bits), WriteFunction::SingleCoil) => {
                let on = bits.first().copied().unwrap_or(false);
                pdu.extend_from_slice(if on { &[0xFF, 0] } else { &[0, 0] });
            }
            (WriteData::Words(words), WriteFunction::SingleRegister) => {
                pdu.extend_from_slice(&words.first().copied().unwrap_or(0).to_be_bytes());
            }
            (WriteData::Bits(bits), _) => {
                let count = u16::try_from(bits.len()).unwrap_or(u16::MAX);
                pdu.extend_from_slice(&count.to_be_bytes());
                let mut packed = vec![0u8; bits.len().div_ceil(8)];
                for (i, _) in bits.iter().enumerate().filter(|(_, on)| **on) {
                    packed[i / 8] |= 1 << (i % 8);
                }
                pdu.push(u8::try_from(packed.len()).unwrap_or(u8::MAX));
                pdu.extend_from_slice(&packed);
            }
            (WriteData::Words(words), _) => {
                let count = u16::try_from(words.len()).unwrap_or(u16::MAX);
                pdu.extend_from_slice(&count.to_be_bytes());
                pdu.push(u8::try_from(words.len() * 2).unwrap_or(u8::MAX));
                for w in words {
                    pdu.extend_from_slice(&w.to_be_bytes());
                }
            }
        }
        pdu
    }
}

/// The result of one write transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// The device confirmed the write.
    Done,
    /// The device answered with an exception code.
    Exception(u8),
    /// No answer within the timeout: the write may or may not have landed.
    Timeout,
    /// The transport failed.
    Failed(String),
}

/// An open client: our own for Modbus TCP, tokio-modbus for serial framing.
#[allow(
    clippy::large_enum_variant,
    reason = "one per link, held by its task for the link's life: boxing the frame buffer would save nothing"
)]
enum Client {
    Tcp(TcpReader<TcpStream>),
    Rtu(Context),
}

/// An open (or not yet open) client connection for one link.
pub struct Connection {
    link: Link,
    ctx: Option<Client>,
    /// When the last transaction ended, to keep the RTU silent interval between frames.
    last_frame_end: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("link", &self.link.name)
            .field("open", &self.ctx.is_some())
            .finish()
    }
}

async fn tcp(link: &str, e: &TcpEndpoint) -> Result<TcpStream, ConnectError> {
    let endpoint = e.to_string();
    match tokio::time::timeout(
        e.connect_timeout,
        TcpStream::connect((e.host.as_str(), e.port)),
    )
    .await
    {
        Ok(Ok(s)) => {
            // Modbus is request/response with small frames: Nagle only adds latency.
            if let Err(err) = s.set_nodelay(true) {
                tracing::debug!(link, error = %err, "Cannot disable Nagle; continuing.");
            }
            Ok(s)
        }
        Ok(Err(source)) => Err(ConnectError::Tcp {
            link: link.to_owned(),
            endpoint,
            source,
        }),
        Err(_) => Err(ConnectError::TcpTimeout {
            link: link.to_owned(),
            endpoint,
            timeout_ms: e.connect_timeout.as_millis(),
        }),
    }
}

impl Connection {
    /// A connection for `link`, opened on first use.
    pub fn new(link: Link) -> Self {
        Self {
            link,
            ctx: None,
            last_frame_end: None,
        }
    }

    /// The link.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Whether a context is open.
    pub fn is_open(&self) -> bool {
        self.ctx.is_some()
    }

    /// Silence to keep between transactions (serial buses only).
    pub fn inter_frame_delay(&self) -> Duration {
        match &self.link.transport {
            Transport::Tcp(_) => Duration::ZERO,
            Transport::Rtu(s) => s.inter_frame_delay,
            Transport::RtuOverTcp {
                inter_frame_delay, ..
            } => *inter_frame_delay,
        }
    }

    /// Opens the link if it is not open.
    ///
    /// # Errors
    /// [`ConnectError`] naming the link and endpoint.
    pub async fn ensure_open(&mut self) -> Result<(), ConnectError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let name = self.link.name.as_str();
        let ctx = match &self.link.transport {
            Transport::Tcp(e) => Client::Tcp(TcpReader::new(tcp(name, e).await?)),
            Transport::RtuOverTcp { endpoint, .. } => Client::Rtu(
                tokio_modbus::client::rtu::attach(tcp(name, endpoint).await?),
            ),
            Transport::Rtu(s) => {
                let builder = tokio_serial::new(s.path.to_string_lossy(), s.baud)
                    .data_bits(tokio_serial::DataBits::Eight)
                    .parity(match s.parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .stop_bits(if s.stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    });
                let port = tokio_serial::SerialStream::open(&builder).map_err(|source| {
                    ConnectError::Serial {
                        link: name.to_owned(),
                        path: s.path.display().to_string(),
                        source,
                    }
                })?;
                Client::Rtu(tokio_modbus::client::rtu::attach(port))
            }
        };
        self.ctx = Some(ctx);
        Ok(())
    }

    /// Drops the connection; the next transaction reopens it.
    pub fn close(&mut self) {
        self.ctx = None;
    }

    /// Reads `count` registers or bits at `address` from `unit`, within `timeout`.
    /// A timeout or transport failure closes the connection.
    pub async fn read(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
        timeout: Duration,
    ) -> ReadResult {
        let gap = self.inter_frame_delay();
        if let Some(end) = self.last_frame_end.filter(|_| !gap.is_zero()) {
            tokio::time::sleep_until(end + gap).await;
        }
        let outcome = match self.ctx.as_mut() {
            None => return ReadResult::Failed("link is not open".into()),
            Some(Client::Tcp(reader)) => {
                tokio::time::timeout(timeout, reader.read(unit, function, address, count))
                    .await
                    .map(|r| r.map_err(|e| e.to_string()))
            }
            Some(Client::Rtu(ctx)) => {
                tokio::time::timeout(timeout, rtu_read(ctx, unit, function, address, count)).await
            }
        };
        self.last_frame_end = Some(tokio::time::Instant::now());
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => {
                self.ctx = None;
                ReadResult::Failed(err)
            }
            Err(_) => {
                // A late answer would be taken for the next request's: start afresh.
                self.ctx = None;
                ReadResult::Timeout
            }
        }
    }
}

impl Connection {
    /// Sends one write to `unit` and waits for its confirmation within `timeout`, keeping the
    /// inter-frame silence as reads do. A timeout or transport failure closes the connection.
    pub async fn write(&mut self, unit: u8, write: &ModbusWrite, timeout: Duration) -> WriteResult {
        let gap = self.inter_frame_delay();
        if let Some(end) = self.last_frame_end.filter(|_| !gap.is_zero()) {
            tokio::time::sleep_until(end + gap).await;
        }
        let outcome = match self.ctx.as_mut() {
            None => return WriteResult::Failed("link is not open".into()),
            Some(Client::Tcp(client)) => tokio::time::timeout(timeout, client.write(unit, write))
                .await
                .map(|r| r.map_err(|e| e.to_string())),
            Some(Client::Rtu(ctx)) => {
                tokio::time::timeout(timeout, rtu_write(ctx, unit, write)).await
            }
        };
        self.last_frame_end = Some(tokio::time::Instant::now());
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => {
                self.ctx = None;
                WriteResult::Failed(err)
            }
            Err(_) => {
                self.ctx = None;
                WriteResult::Timeout
            }
        }
    }
}

/// One write through tokio-modbus; `Err` is a transport failure, an exception is a result.
async fn rtu_write(
    ctx: &mut Context,
    unit: u8,
    write: &ModbusWrite,
) -> Result<WriteResult, String> {
    ctx.set_slave(Slave(unit));
    let address = write.address;
    let answer = match (&write.data, write.function) {
        (WriteData::Bits(bits), WriteFunction::SingleCoil) => {
            ctx.write_single_coil(address, bits.first().copied().unwrap_or(false))
                .await
        }
        (WriteData::Bits(bits), _) => ctx.write_multiple_coils(address, bits).await,
        (WriteData::Words(words), WriteFunction::SingleRegister) => {
            ctx.write_single_register(address, words.first().copied().unwrap_or(0))
                .await
        }
        (WriteData::Words(words), _) => ctx.write_multiple_registers(address, words).await,
    };
    match answer {
        Ok(Ok(())) => Ok(WriteResult::Done),
        Ok(Err(exception)) => Ok(WriteResult::Exception(u8::from(exception))),
        Err(err) => Err(err.to_string()),
    }
}

/// One read through tokio-modbus; `Err` is a transport failure, an exception is a result.
async fn rtu_read(
    ctx: &mut Context,
    unit: u8,
    function: Function,
    address: u16,
    count: u16,
) -> Result<ReadResult, String> {
    ctx.set_slave(Slave(unit));
    let answer = match function {
        Function::Coil => ctx
            .read_coils(address, count)
            .await
            .map(|r| r.map(ReadResult::Bits)),
        Function::DiscreteInput => ctx
            .read_discrete_inputs(address, count)
            .await
            .map(|r| r.map(ReadResult::Bits)),
        Function::Holding => ctx
            .read_holding_registers(address, count)
            .await
            .map(|r| r.map(ReadResult::Words)),
        Function::Input => ctx
            .read_input_registers(address, count)
            .await
            .map(|r| r.map(ReadResult::Words)),
    };
    match answer {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(exception)) => Ok(ReadResult::Exception(u8::from(exception))),
        Err(err) => Err(err.to_string()),
    }
}
