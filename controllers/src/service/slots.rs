//! Decides what a service's tasks need: slots filled, ended tasks replaced, scale-down, history.
//!
//! Swarm's model: a *slot* is one replica (replicated mode, numbered from 1) or one node
//! (global mode). A slot's *current* task is the one meant to run (desired state `running`,
//! or `ready` while staged); every other task of the slot is history. Everything here is a
//! pure function of the service, its tasks and the nodes, so the loop around it only writes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use dctl_apis::node::NodeAvailability;
use dctl_apis::service::ServiceMode;
use dctl_apis::task::{TaskDesiredState, TaskState};
use dctl_apis::{Service, Task, Time};

use super::eligibility::NodeFit;
use super::restart::{self, Ending, Restart};

/// One replica of a replicated service, or the node a global service's task is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotId {
    Replica(u32),
    Node(String),
}

impl SlotId {
    /// The slot a task fills, from `spec.slot` or `spec.node`.
    pub fn of(task: &Task) -> Option<SlotId> {
        match (&task.spec.slot, &task.spec.node) {
            (Some(slot), _) => Some(SlotId::Replica(*slot)),
            (None, Some(node)) => Some(SlotId::Node(node.clone())),
            (None, None) => None,
        }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotId::Replica(n) => write!(f, "slot {n}"),
            SlotId::Node(node) => write!(f, "node {node}"),
        }
    }
}

/// What the service controller looks at for one service.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub service: &'a Service,
    /// The service's own tasks (its controller owner reference names its uid).
    pub tasks: &'a [&'a Task],
    pub nodes: &'a BTreeMap<String, NodeFit>,
    /// Finished tasks kept per slot (raised to `maxAttempts`, which is counted from them).
    pub history_limit: u32,
    pub now: Time,
}

/// What to write, in this order: create, stop, start, delete.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<NewTask>,
    /// Set these tasks' desired state to `shutdown`.
    pub stop: Vec<Stop>,
    /// Staged tasks (desired `ready`) whose predecessor has stopped: set them `running`.
    pub start: Vec<String>,
    /// Finished tasks beyond the history limit.
    pub delete: Vec<String>,
    /// Slots the restart policy keeps waiting or empty, for Warning events.
    pub held: Vec<Held>,
    /// Look again after this long though nothing changes (a restart delay running out).
    pub requeue_after: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    pub slot: SlotId,
    /// `running`, or `ready` (staged) for a template update that waits for the old task.
    pub desired_state: TaskDesiredState,
    pub reason: CreateReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateReason {
    /// The slot has no task (a new service, a scale-up, an eligible node).
    NewSlot,
    /// The restart policy replaces a task that ended.
    Restart { replaces: String },
    /// The task's node was drained or lost: no restart delay, not a failure.
    Moved { replaces: String },
    /// The task runs an older template.
    Update { replaces: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub task: String,
    pub reason: StopReason,
    /// Whether the task had not ended yet: only then is stopping it news for a human.
    pub live: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    ScaledDown,
    /// The slot had another current task, a newer one.
    Superseded,
    /// The task ended and its replacement was created; this makes it history.
    Replaced,
    /// Its template is no longer the service's.
    Outdated,
    NodeDrained(String),
    /// The node no longer satisfies the placement constraints.
    NodeIneligible(String),
    NodeGone(String),
    /// A task of the other mode (the service switched between replicated and global).
    ModeChanged,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::ScaledDown => f.write_str("the service was scaled down"),
            StopReason::Superseded => f.write_str("a newer task fills its slot"),
            StopReason::Replaced => f.write_str("it ended and was replaced"),
            StopReason::Outdated => f.write_str("the service's template changed"),
            StopReason::NodeDrained(node) => write!(f, "node {node} is drained"),
            StopReason::NodeIneligible(node) => {
                write!(
                    f,
                    "node {node} no longer satisfies the placement constraints"
                )
            }
            StopReason::NodeGone(node) => write!(f, "node {node} is gone"),
            StopReason::ModeChanged => f.write_str("the service's mode changed"),
        }
    }
}

/// A slot the restart policy holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub slot: SlotId,
    /// The task that ended.
    pub task: String,
    pub reason: HeldReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeldReason {
    /// A crash loop: the replacement waits until `at`.
    BackOff { quick_failures: u32, at: Time },
    /// `maxAttempts` reached: the slot stays empty.
    MaxAttempts { attempts: u32, max: u32 },
}

/// The tasks of one slot: the one meant to run, and the rest.
#[derive(Debug, Default)]
struct Slot<'a> {
    current: Option<&'a Task>,
    past: Vec<&'a Task>,
}

/// Decides what `input.service` needs, in the words of DESIGN §5: one task per slot
/// (replicated) or per eligible node (global); failed tasks replaced per the restart
/// policy; scale-down non-running and most-loaded first; a bounded task history.
///
/// Template changes: until the rollout controller exists (issue 5), this is the interim
/// rollout: tasks of an older template are replaced `update.parallelism` slots at a time
/// (0: all), stop-first (the new task is staged, desired `ready`, and set `running` once
/// the old one has stopped), and a slot counts as done only once its new task runs.
pub fn plan(input: &Input<'_>) -> Plan {
    let mut plan = Plan::default();
    let slots = group(input.tasks, &mut plan);
    let spec = &input.service.spec;
    let (kept, wanted) = match spec.mode {
        ServiceMode::Replicated => {
            let replicas = spec.replicas.unwrap_or(1);
            replicated_slots(&slots, replicas, &mut plan)
        }
        ServiceMode::Global => global_slots(&slots, input.nodes, &mut plan),
    };
    let mut outdated = Vec::new();
    let mut updating = 0;
    for slot_id in &kept {
        let slot = &slots[slot_id];
        let Some(task) = slot.current else { continue };
        if is_terminal(task) {
            replace_ended(input, slot_id, task, &slot.past, &mut plan);
            continue;
        }
        if let Some(reason) = displaced(input, task) {
            plan.create.push(NewTask {
                slot: slot_id.clone(),
                desired_state: TaskDesiredState::Running,
                reason: CreateReason::Moved {
                    replaces: name(task),
                },
            });
            plan.stop_live(task, reason);
            continue;
        }
        let staged = task.spec.desired_state == TaskDesiredState::Ready;
        if staged && !slot.past.iter().any(|t| is_stopping(t)) {
            plan.start.push(name(task));
        }
        if task.spec.template != spec.template {
            if !staged {
                outdated.push((slot_id.clone(), task));
            }
        } else if staged || state(task) < Some(TaskState::Running) {
            updating += 1;
        }
    }
    update_outdated(spec.update.parallelism, updating, outdated, &mut plan);
    let policy = &spec.template.restart_policy;
    let keep = input.history_limit.max(policy.max_attempts) as usize;
    for (slot_id, slot) in &slots {
        let keep = if wanted.contains(slot_id) { keep } else { 0 };
        plan.delete.extend(trim_history(&slot.past, keep));
    }
    plan
}

impl Plan {
    fn stop_live(&mut self, task: &Task, reason: StopReason) {
        self.stop.push(Stop {
            task: name(task),
            reason,
            live: !is_terminal(task),
        });
    }

    fn requeue_at(&mut self, at: Time, now: Time) {
        let after = (at - now).to_std().unwrap_or(Duration::ZERO);
        self.requeue_after = Some(self.requeue_after.map_or(after, |d| d.min(after)));
    }
}

/// Sorts tasks into slots; a slot with several current tasks keeps the newest and stops
/// the others (a replacement created just before a crash, a lost race).
fn group<'a>(tasks: &[&'a Task], plan: &mut Plan) -> BTreeMap<SlotId, Slot<'a>> {
    let mut slots: BTreeMap<SlotId, Slot<'a>> = BTreeMap::new();
    let mut tasks = tasks.to_vec();
    // Newest first, so the first current task seen in a slot is the one it keeps.
    tasks.sort_by_key(|t| Reverse((t.metadata.creation_timestamp, t.metadata.name.clone())));
    for task in tasks {
        let Some(slot_id) = SlotId::of(task) else {
            continue;
        };
        let slot = slots.entry(slot_id).or_default();
        if !is_current(task) {
            slot.past.push(task);
        } else if slot.current.is_none() {
            slot.current = Some(task);
        } else if is_terminal(task) {
            plan.stop_live(task, StopReason::Replaced);
        } else {
            plan.stop_live(task, StopReason::Superseded);
        }
    }
    slots
}

/// Replicated mode: keeps `replicas` slots occupied. Returns the occupied slots that stay
/// (to look after) and every slot wanted once the plan is done (to keep history for).
fn replicated_slots(
    slots: &BTreeMap<SlotId, Slot<'_>>,
    replicas: u32,
    plan: &mut Plan,
) -> (Vec<SlotId>, BTreeSet<SlotId>) {
    let mut occupied: Vec<(SlotId, &Task)> = Vec::new();
    for (slot_id, slot) in slots {
        let Some(task) = slot.current else { continue };
        match slot_id {
            SlotId::Replica(_) => occupied.push((slot_id.clone(), task)),
            SlotId::Node(_) => plan.stop_live(task, StopReason::ModeChanged),
        }
    }
    let replicas = replicas as usize;
    if occupied.len() > replicas {
        let excess = occupied.len() - replicas;
        for slot_id in scale_down_order(&occupied).into_iter().take(excess) {
            let (_, task) = occupied
                .iter()
                .find(|(s, _)| *s == slot_id)
                .expect("listed");
            plan.stop_live(task, StopReason::ScaledDown);
            occupied.retain(|(s, _)| *s != slot_id);
        }
    }
    let mut wanted: BTreeSet<SlotId> = occupied.iter().map(|(s, _)| s.clone()).collect();
    let kept = wanted.iter().cloned().collect();
    // New slots take the lowest free numbers, reusing those of slots emptied before.
    let mut number = 1;
    while wanted.len() < replicas {
        let slot_id = SlotId::Replica(number);
        if wanted.insert(slot_id.clone()) {
            plan.create.push(NewTask {
                slot: slot_id,
                desired_state: TaskDesiredState::Running,
                reason: CreateReason::NewSlot,
            });
        }
        number += 1;
    }
    (kept, wanted)
}

/// The order in which occupied slots are emptied on scale-down: tasks not running first,
/// then those on the node with the most tasks of the service, then the highest slot.
pub fn scale_down_order(occupied: &[(SlotId, &Task)]) -> Vec<SlotId> {
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, task) in occupied {
        if let Some(node) = task.spec.node_name.as_deref() {
            *load.entry(node).or_default() += 1;
        }
    }
    let mut ranked: Vec<_> = occupied
        .iter()
        .map(|(slot_id, task)| {
            let running = state(task) == Some(TaskState::Running);
            let node_load = task.spec.node_name.as_deref().map_or(0, |node| load[node]);
            (
                (running, Reverse(node_load), Reverse(slot_id.clone())),
                slot_id,
            )
        })
        .collect();
    ranked.sort();
    ranked
        .into_iter()
        .map(|(_, slot_id)| slot_id.clone())
        .collect()
}

/// Global mode: a slot per node that keeps tasks and either accepts new ones or already
/// has one. Returns the slots with a task to look after, and every slot wanted.
fn global_slots(
    slots: &BTreeMap<SlotId, Slot<'_>>,
    nodes: &BTreeMap<String, NodeFit>,
    plan: &mut Plan,
) -> (Vec<SlotId>, BTreeSet<SlotId>) {
    let (mut kept, mut wanted) = (Vec::new(), BTreeSet::new());
    for (node, fit) in nodes {
        let slot_id = SlotId::Node(node.clone());
        let current = slots.get(&slot_id).and_then(|slot| slot.current);
        match current {
            Some(task) if !fit.keeps_tasks() => {
                let reason = if fit.availability == NodeAvailability::Drain {
                    StopReason::NodeDrained(node.clone())
                } else {
                    StopReason::NodeIneligible(node.clone())
                };
                plan.stop_live(task, reason);
            }
            Some(_) => {
                kept.push(slot_id.clone());
                wanted.insert(slot_id);
            }
            None if fit.accepts_new_tasks() => {
                plan.create.push(NewTask {
                    slot: slot_id.clone(),
                    desired_state: TaskDesiredState::Running,
                    reason: CreateReason::NewSlot,
                });
                wanted.insert(slot_id);
            }
            None => {}
        }
    }
    for (slot_id, slot) in slots {
        let Some(task) = slot.current else { continue };
        match slot_id {
            SlotId::Node(node) if !nodes.contains_key(node) => {
                plan.stop_live(task, StopReason::NodeGone(node.clone()));
            }
            SlotId::Node(_) => {}
            SlotId::Replica(_) => plan.stop_live(task, StopReason::ModeChanged),
        }
    }
    (kept, wanted)
}

/// A slot's current task ended: replace it now, later, or never, as the restart policy says.
fn replace_ended(
    input: &Input<'_>,
    slot_id: &SlotId,
    task: &Task,
    past: &[&Task],
    plan: &mut Plan,
) {
    // A global task waits for its node to take new tasks again (ready, not paused).
    if let SlotId::Node(node) = slot_id {
        if !input
            .nodes
            .get(node)
            .is_some_and(|fit| fit.accepts_new_tasks())
        {
            return;
        }
    }
    let template = &input.service.spec.template;
    // A new template is a fresh start: the slot gets a task of it whatever the old one's
    // ending (Swarm re-runs tasks on update), and its attempts count from zero.
    if task.spec.template != *template {
        plan.create.push(NewTask {
            slot: slot_id.clone(),
            desired_state: TaskDesiredState::Running,
            reason: CreateReason::Update {
                replaces: name(task),
            },
        });
        plan.stop_live(task, StopReason::Replaced);
        return;
    }
    let past: Vec<&Task> = past
        .iter()
        .copied()
        .filter(|t| t.spec.template == *template)
        .collect();
    let policy = &template.restart_policy;
    let held = |reason| Held {
        slot: slot_id.clone(),
        task: name(task),
        reason,
    };
    match restart::decide(policy, task, &past, input.now) {
        Restart::Now => {
            let replaces = name(task);
            let reason = if restart::ending(task) == Some(Ending::Displaced) {
                CreateReason::Moved { replaces }
            } else {
                CreateReason::Restart { replaces }
            };
            plan.create.push(NewTask {
                slot: slot_id.clone(),
                desired_state: TaskDesiredState::Running,
                reason,
            });
            plan.stop_live(task, StopReason::Replaced);
        }
        Restart::At { at, quick_failures } => {
            plan.requeue_at(at, input.now);
            if quick_failures > 1 {
                plan.held
                    .push(held(HeldReason::BackOff { quick_failures, at }));
            }
        }
        Restart::Exhausted { attempts, until } => {
            if let Some(until) = until {
                plan.requeue_at(until, input.now);
            }
            let max = policy.max_attempts;
            plan.held
                .push(held(HeldReason::MaxAttempts { attempts, max }));
        }
        Restart::NotWanted => {}
    }
}

/// Why a replicated task must move at once: its node was drained or is gone. (A global
/// task belongs to its node; its slot goes instead, see [`global_slots`].)
fn displaced(input: &Input<'_>, task: &Task) -> Option<StopReason> {
    if input.service.spec.mode != ServiceMode::Replicated {
        return None;
    }
    let node = task.spec.node_name.as_deref()?;
    match input.nodes.get(node) {
        None => Some(StopReason::NodeGone(node.to_string())),
        Some(fit) if fit.availability == NodeAvailability::Drain => {
            Some(StopReason::NodeDrained(node.to_string()))
        }
        Some(_) => None,
    }
}

/// Stages replacements for tasks of an older template, at most `parallelism` (0: all)
/// slots in flight, counting the `updating` ones whose new task does not run yet.
fn update_outdated(
    parallelism: Option<u32>,
    updating: usize,
    outdated: Vec<(SlotId, &Task)>,
    plan: &mut Plan,
) {
    let budget = match parallelism.unwrap_or(1) {
        0 => usize::MAX,
        n => (n as usize).saturating_sub(updating),
    };
    for (slot_id, task) in outdated.into_iter().take(budget) {
        plan.create.push(NewTask {
            slot: slot_id,
            desired_state: TaskDesiredState::Ready,
            reason: CreateReason::Update {
                replaces: name(task),
            },
        });
        plan.stop_live(task, StopReason::Outdated);
    }
}

/// The finished tasks of a slot beyond the newest `keep`, to delete.
pub fn trim_history(past: &[&Task], keep: usize) -> Vec<String> {
    let mut finished: Vec<&Task> = past.iter().copied().filter(|t| is_finished(t)).collect();
    finished.sort_by_key(|t| Reverse((restart::ended_at(t), t.metadata.name.clone())));
    finished.iter().skip(keep).map(|t| name(t)).collect()
}

/// Meant to run: desired `running`, or `ready` while staged.
pub fn is_current(task: &Task) -> bool {
    matches!(
        task.spec.desired_state,
        TaskDesiredState::Running | TaskDesiredState::Ready
    )
}

fn state(task: &Task) -> Option<TaskState> {
    task.status.as_ref().map(|s| s.state)
}

fn is_terminal(task: &Task) -> bool {
    state(task).is_some_and(TaskState::is_terminal)
}

/// Told to stop, and its agent has not reported it stopped yet.
fn is_stopping(task: &Task) -> bool {
    !is_current(task) && task.spec.node_name.is_some() && !is_terminal(task)
}

/// History for good: told to stop, and it has ended or was never bound to a node (so no
/// agent will ever run it).
fn is_finished(task: &Task) -> bool {
    !is_current(task) && (is_terminal(task) || task.spec.node_name.is_none())
}

fn name(task: &Task) -> String {
    task.metadata.name.clone()
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "slots_update_tests.rs"]
mod update_tests;
