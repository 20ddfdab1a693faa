//! Conversions between the wire (`pb`) and the domain, both ways, one file per message family.
//! Everything a client or worker sends is parsed here into domain types, with errors that name
//! the field.

mod coordinator_messages;
mod files;
mod inspect;
mod primitives;
mod progress;
mod schedules;
mod tasks;
mod worker_messages;

pub use coordinator_messages::{coordinator_message_from_pb, coordinator_message_to_pb};
pub use files::{file_info_from_pb, file_info_to_pb, upload_part_from_pb};
pub use inspect::{
    key_rate_from_pb, key_rate_to_pb, ping_from_pb, ping_to_pb, queue_depth_from_pb,
    queue_depth_to_pb, rate_rule_from_pb, rate_rule_to_pb, tasks_by_worker_to_pb,
    worker_queues_to_pb, worker_stats_from_pb, worker_stats_to_pb,
};
pub use primitives::{duration_to_pb, state_from_pb, state_to_pb, timestamp_to_pb, wait_from_pb};
pub use progress::{record_from_pb, record_to_pb, tree_event_from_pb, tree_event_to_pb};
pub use schedules::{schedule_from_pb, schedule_from_stored_pb, schedule_to_pb};
pub use tasks::{
    selector_from_pb, selector_to_pb, task_from_pb, task_spec_from_pb, task_spec_to_pb, task_to_pb,
};
pub use worker_messages::{worker_message_from_pb, worker_message_to_pb};
