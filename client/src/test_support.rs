//! What the unit tests of several modules share.

/// A request's topics as `(name, [(partition, value)])`, to compare with a literal: `name` and
/// `partitions` read a topic entry, `entry` a partition entry.
pub(crate) fn request_shape<'a, T, P: 'a>(
    topics: &'a [T],
    name: impl Fn(&'a T) -> &'a str,
    partitions: impl Fn(&'a T) -> &'a [P],
    entry: impl Fn(&P) -> (i32, i64),
) -> Vec<(&'a str, Vec<(i32, i64)>)> {
    topics
        .iter()
        .map(|t| (name(t), partitions(t).iter().map(&entry).collect()))
        .collect()
}
