//! Three Raft nodes in one process, talking over real TCP on 127.0.0.2-4:
//! the transport in `network.rs` end to end (votes, entries, failover).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Consensus, NodeId, Storage};
use crate::catalog::command::KvOp;
use crate::catalog::Command;

/// Raft only: these nodes answer no cluster or HTTP requests.
struct RaftOnly;

#[async_trait::async_trait]
impl super::RpcServices for RaftOnly {
    async fn cluster(
        &self,
        _: crate::cluster::rpc::ClusterRequest,
    ) -> Result<crate::cluster::rpc::ClusterResponse, String> {
        Err("not served in this test".into())
    }

    async fn http(&self, _: crate::cluster::rpc::HttpRequest) -> crate::cluster::rpc::HttpResponse {
        crate::cluster::rpc::HttpResponse {
            status: 404,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

async fn node(id: NodeId, ip: &str) -> (Consensus, String) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let c = Consensus::start(id, &addr, &Storage::Memory, false, 10_000)
        .await
        .expect("start");
    c.serve_rpc(listener, std::sync::Arc::new(RaftOnly));
    (c, addr)
}

fn value(c: &Consensus, key: &str) -> Option<Vec<u8>> {
    let st = c.state().read().ok()?;
    st.catalog.kv().get(key).map(|e| e.value.clone())
}

async fn wait_value(nodes: &[&Consensus], key: &str, want: &[u8]) {
    for _ in 0..200 {
        if nodes.iter().all(|c| value(c, key).as_deref() == Some(want)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} did not replicate to every node");
}

fn put(key: &str, value: &[u8]) -> Command {
    Command::Kv(KvOp::Set {
        key: key.into(),
        value: value.to_vec(),
        flags: 0,
    })
}

async fn leader_of<'a>(nodes: &[&'a Consensus]) -> &'a Consensus {
    for _ in 0..300 {
        if let Some(l) = nodes.iter().find(|c| c.is_leader()) {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader among {} nodes", nodes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_replicate_and_fail_over_over_tcp() {
    let (a, a_addr) = node(1, "127.0.0.2").await;
    let (b, b_addr) = node(2, "127.0.0.3").await;
    let (c, c_addr) = node(3, "127.0.0.4").await;
    a.initialize(BTreeMap::from([(1, a_addr), (2, b_addr), (3, c_addr)]))
        .await
        .expect("initialize");
    let all = [&a, &b, &c];
    let leader = leader_of(&all).await;
    assert_eq!(leader.peers().len(), 3);
    leader.write(put("k", b"one")).await.expect("write");
    wait_value(&all, "k", b"one").await;

    // A write made on a follower is forwarded to the leader.
    let follower = all.iter().find(|c| !c.is_leader()).expect("a follower");
    let (index, _) = follower
        .write(put("f", b"forwarded"))
        .await
        .expect("forwarded write");
    assert!(index > 0);
    wait_value(&all, "f", b"forwarded").await;

    // The leader goes away; the other two elect one and keep writing.
    let old = leader.id();
    leader.shutdown().await;
    let rest: Vec<&Consensus> = all.iter().copied().filter(|c| c.id() != old).collect();
    let new = leader_of(&rest).await;
    assert_ne!(new.id(), old);
    new.write(put("k", b"two"))
        .await
        .expect("write after failover");
    wait_value(&rest, "k", b"two").await;
}
