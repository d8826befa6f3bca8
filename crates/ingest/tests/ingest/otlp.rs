//! OTLP metrics: the shared examples, the name translation table, and each
//! point type.

use crate::common::{conformance_file, render};
use ingest::otlp::{decode_metrics_json, decode_metrics_protobuf};

#[test]
fn conformance_examples() {
    let j = decode_metrics_json(&conformance_file("otlp/metrics.json")).unwrap();
    for l in render(&j.batch) { println!("{l}"); }
    println!("{:?}", j.batch.series);
    println!("{:?} {:?} {:?}", j.batch.metadata, j.rejected_data_points, j.messages);
    let p = decode_metrics_protobuf(&conformance_file("otlp/metrics.binpb")).unwrap();
    assert_eq!(j, p);
}
