//! Observability: with `[telemetry] otlp_endpoint` set, the gateway exports its RPC spans over OTLP/gRPC.
//! A minimal OTLP trace collector runs inside the test and records what arrives.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use std::sync::{Arc, Mutex};
use tokumei_ingest::client::push;
use tokumei_proto::ingest::v1::RecordBatch;

/// A received span: its name and its attributes as (key, debug-printed value).
type ReceivedSpan = (String, Vec<(String, String)>);

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let attrs = span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
                        .collect();
                    spans.push((span.name, attrs));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_reach_an_otlp_collector() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let home = Home::with_config(&format!("[telemetry]\notlp_endpoint = \"http://{addr}\"\n"));
    let mut gw = home.start_with(&[], &[("RUST_LOG", "info")]);
    let mut c = gw.client(&home, HOSPITAL_A).await;
    let receipt = push(
        &mut c,
        vec![RecordBatch {
            batch_id: "otel-1".into(),
            records: vec![valid_record("T1")],
        }],
    )
    .await
    .unwrap();
    assert_eq!(receipt.accepted, 1);
    drop(c);
    assert!(gw.terminate().success());
    let spans = collector.spans.lock().unwrap().clone();
    let push_span = spans.iter().find(|(name, _)| name == "ingest.push");
    let Some((_, attrs)) = push_span else {
        panic!("no ingest.push span among {spans:?}")
    };
    let attr = |k: &str| {
        attrs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(attr("hospital").contains(HOSPITAL_A), "{attrs:?}");
    assert!(attr("accepted").contains('1'), "{attrs:?}");
    // Spans carry counts and codes, never identifiers.
    let all = format!("{spans:?}");
    for planted in ["ヤマダ", "06135018", "T1\""] {
        assert!(!all.contains(planted), "{planted} in exported spans");
    }
}
