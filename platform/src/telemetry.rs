//! Logs and traces: a tracing subscriber on stderr (text or JSON) and, when an OTLP endpoint is configured,
//! an OpenTelemetry exporter so every RPC span reaches the collector. Off by default.

use crate::config::TelemetryConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes spans on drop.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Telemetry setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`. Third-party HTTP clients are kept at
/// `warn` so that request bodies (which may carry pseudonymisation inputs) can never be traced.
pub fn init(cfg: &TelemetryConfig, default_filter: &str) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter))
        .add_directive(
            "rustify=warn"
                .parse()
                .map_err(|e| TelemetryError::Exporter(format!("{e}")))?,
        )
        .add_directive(
            "reqwest=warn"
                .parse()
                .map_err(|e| TelemetryError::Exporter(format!("{e}")))?,
        )
        .add_directive(
            "h2=warn"
                .parse()
                .map_err(|e| TelemetryError::Exporter(format!("{e}")))?,
        );
    let fmt = if cfg.log_format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            // Colour codes only for a person at a terminal, never into a file or a log collector.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    let mut provider = None;
    let otel = if cfg.otlp_endpoint.is_empty() {
        None
    } else {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.otlp_endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let p = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("tokumei")
                    .build(),
            )
            .build();
        let tracer = p.tracer("tokumei");
        provider = Some(p);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(TelemetryGuard { provider })
}
