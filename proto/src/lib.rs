//! Generated code for tokumei's gRPC contracts.
//!
//! Messages that carry direct identifiers (`PatientRecord`, `Insurance`, `PatientRequest`) have a hand-written
//! `Debug` that redacts them, so that logging a request can never leak a name or an insured number.

pub mod ingest {
    /// `tokumei.ingest.v1`: the hospital-facing ingestion contract.
    pub mod v1 {
        tonic::include_proto!("tokumei.ingest.v1");
    }
}

pub mod spool {
    /// `tokumei.spool.v1`: the pseudonymised spool that the core store pulls from.
    pub mod v1 {
        tonic::include_proto!("tokumei.spool.v1");
    }
}

pub mod policy {
    /// `tokumei.policy.v1`: the committee zone's service (users, applications, review, bans, audit).
    pub mod v1 {
        tonic::include_proto!("tokumei.policy.v1");
    }
}

pub mod release {
    /// `tokumei.release.v1`: the release zone's researcher-facing service (list, download, declare deletion).
    pub mod v1 {
        tonic::include_proto!("tokumei.release.v1");
    }
}

pub mod analysis {
    /// `tokumei.analysis.v1`: the remote analysis environment (workspaces, output requests and their checking).
    pub mod v1 {
        tonic::include_proto!("tokumei.analysis.v1");
    }
}

pub mod bounded;
mod redacted_debug;
