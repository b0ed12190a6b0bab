//! DescribeLogDirs (35): this broker's log directory (`log.dirs`, one), with the size of each
//! partition replica it holds and, from v4, the file system's total and usable bytes, as
//! `kafka-log-dirs` and `kafka-reassign-partitions` read them. No replica is ever a future one
//! (moving replicas between directories is not supported).

use quipu_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use quipu_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use quipu_protocol::StrBytes;

use crate::request_context::RequestContext;

pub fn handle(ctx: &RequestContext, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let named: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let wanted = |topic: &str, index: i32| {
        named.as_ref().is_none_or(|n| {
            n.iter()
                .any(|(t, partitions)| t == topic && partitions.contains(&index))
        })
    };
    let mut result = DescribeLogDirsResult::default();
    let dir = ctx
        .config
        .log_dirs
        .canonicalize()
        .unwrap_or(ctx.config.log_dirs.clone());
    result.log_dir = StrBytes::from_string(dir.display().to_string());
    (result.total_bytes, result.usable_bytes) = space_of(&dir).unwrap_or((-1, -1));
    for partition in ctx.replicas.all() {
        if !wanted(partition.topic(), partition.index()) {
            continue;
        }
        let mut p = DescribeLogDirsPartition::default();
        p.partition_index = partition.index();
        p.partition_size = partition.log().size_bytes() as i64;
        let name = partition.topic();
        let at = match result.topics.iter().position(|t| t.name.0.as_str() == name) {
            Some(at) => at,
            None => {
                let mut t = DescribeLogDirsTopic::default();
                t.name = TopicName(StrBytes::from_string(name.to_string()));
                result.topics.push(t);
                result.topics.len() - 1
            }
        };
        result.topics[at].partitions.push(p);
    }
    let mut response = DescribeLogDirsResponse::default();
    response.results.push(result);
    response
}

/// The file system's total and usable bytes under `dir`.
fn space_of(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as i64;
    Some((stat.f_blocks as i64 * block, stat.f_bavail as i64 * block))
}

super::handler::api!(
    DescribeLogDirs,
    1..=4,
    DescribeLogDirsRequest,
    |ctx, request, meta| { meta.reply(&super::blocking(&ctx, move |b| handle(b, request)).await) }
);
