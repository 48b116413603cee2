//! Trace export over OTLP/HTTP (protobuf), with `telemetry.otlp_endpoint` set: the spans of a
//! request, its jobs' queue wait, each submit and poll, and delivery, through
//! `tracing-opentelemetry`. Spans are batched and exported from a thread of their own; the batch
//! queue is bounded (the SDK's default, 2048 spans: beyond it spans are dropped, never blocking a
//! request).

use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The exporter, shut down (flushing what is queued) when dropped.
pub struct Traces(Option<SdkTracerProvider>);

impl Traces {
    pub(super) fn start<S>(endpoint: Option<&str>) -> (Traces, Option<Box<dyn Layer<S> + Send + Sync>>)
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let Some(endpoint) = endpoint else { return (Traces(None), None) };
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = match SpanExporter::builder().with_http().with_endpoint(url).build() {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("fluxgate: traces are off: the OTLP exporter could not be built: {e}");
                return (Traces(None), None);
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("fluxgate").build())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("fluxgate")).boxed();
        (Traces(Some(provider)), Some(layer))
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // Flushes the queue; an unreachable collector costs at most the exporter's timeout.
            let _ = provider.shutdown();
        }
    }
}
