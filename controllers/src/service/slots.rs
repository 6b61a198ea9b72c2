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

use dctl_apis::meta::find_condition;
use dctl_apis::node::NodeAvailability;
use dctl_apis::service::{ServiceMode, UpdateOrder};
use dctl_apis::task::{TaskDesiredState, TaskState, CONDITION_READY, CONDITION_STARTED};
use dctl_apis::{ConditionStatus, Service, Task, Time};

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
    /// How the rollout under way replaces a task: stop-first stages the new task until the
    /// old one has stopped; start-first keeps the old task until the new one is Ready.
    pub order: UpdateOrder,
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
    /// Where the slots stand against the service's current template and placement: what
    /// the rollout decides on. The plan stages no update until [`Plan::stage_updates`].
    pub survey: Survey,
}

/// The kept slots by how far they are from the service's current template and placement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Survey {
    /// Slots whose task runs an older template, or sits on a node the placement no longer
    /// allows, and has no replacement yet; in slot order.
    pub outdated: Vec<Outdated>,
    /// Slots whose current-template task is not Ready yet (staged, starting, or failing
    /// its readiness probe).
    pub in_flight: usize,
    /// Slots whose current-template task is Ready, with when it became Ready.
    pub ready_since: Vec<Time>,
    /// The update order these decisions were made with.
    pub order: UpdateOrder,
}

impl Survey {
    /// `stop-first` / `start-first`, for events.
    pub fn order_word(&self) -> &'static str {
        match self.order {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
}

/// A slot waiting for its turn in the rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outdated {
    pub slot: SlotId,
    pub task: String,
    /// The task is on a node the placement constraints no longer allow (else: its template
    /// is older).
    pub misplaced: bool,
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
    /// The task runs an older template, or on a node the placement no longer allows.
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
    /// Its template is no longer the service's (stop-first: before its replacement runs).
    Outdated,
    /// Its replacement with the service's current template is Ready (start-first).
    ReplacementReady,
    /// The service's template went back to the one an older task of its slot runs.
    RolledBack,
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
            StopReason::ReplacementReady => {
                f.write_str("its replacement with the new template is Ready")
            }
            StopReason::RolledBack => {
                f.write_str("the service rolled back to the template of an older task")
            }
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
/// Template and placement changes are the rollout's: the plan only surveys the slots
/// ([`Plan::survey`]), and [`Plan::stage_updates`] replaces as many outdated slots as the
/// rollout allows. What it does here itself is finish a slot's update: start a staged task
/// once its predecessor stopped (stop-first), and stop the old task once its replacement
/// is Ready (start-first).
pub fn plan(input: &Input<'_>) -> Plan {
    let mut plan = Plan::default();
    let slots = group(input, &mut plan);
    let spec = &input.service.spec;
    let (kept, wanted) = match spec.mode {
        ServiceMode::Replicated => {
            let replicas = spec.replicas.unwrap_or(1);
            replicated_slots(&slots, replicas, &mut plan)
        }
        ServiceMode::Global => global_slots(&slots, input.nodes, &mut plan),
    };
    plan.survey.order = input.order;
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
        let misplaced = misplaced(input, task);
        if !spec.is_up_to_date(&task.spec) || misplaced {
            if !staged {
                plan.survey.outdated.push(Outdated {
                    slot: slot_id.clone(),
                    task: name(task),
                    misplaced,
                });
            }
        } else if let Some(since) = ready_since(task).filter(|_| !staged) {
            plan.survey.ready_since.push(since);
        } else {
            plan.survey.in_flight += 1;
        }
    }
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

/// Sorts tasks into slots. A slot with several current tasks keeps one: the newest live
/// task of the service's template (after a rollback, the older task still running it), or
/// else the newest. The others are stopped, except, start-first, the older task its
/// replacement will take over from once that is Ready.
fn group<'a>(input: &Input<'a>, plan: &mut Plan) -> BTreeMap<SlotId, Slot<'a>> {
    let spec = &input.service.spec;
    let mut currents: BTreeMap<SlotId, Vec<&'a Task>> = BTreeMap::new();
    let mut slots: BTreeMap<SlotId, Slot<'a>> = BTreeMap::new();
    let mut tasks = input.tasks.to_vec();
    tasks.sort_by_key(|t| Reverse((t.metadata.creation_timestamp, t.metadata.name.clone())));
    for task in tasks {
        let Some(slot_id) = SlotId::of(task) else {
            continue;
        };
        if is_current(task) {
            currents.entry(slot_id.clone()).or_default().push(task);
        }
        let slot = slots.entry(slot_id).or_default();
        if !is_current(task) {
            slot.past.push(task);
        }
    }
    for (slot_id, tasks) in currents {
        let keep = tasks
            .iter()
            .position(|t| spec.is_up_to_date(&t.spec) && !is_terminal(t))
            .unwrap_or(0);
        let current = tasks[keep];
        let replacing = spec.is_up_to_date(&current.spec) && !is_terminal(current);
        let current_ready = ready_since(current).is_some();
        for (i, other) in tasks.iter().enumerate().filter(|(i, _)| *i != keep) {
            let older_template = !spec.is_up_to_date(&other.spec) || misplaced(input, other);
            if is_terminal(other) {
                plan.stop_live(other, StopReason::Replaced);
            } else if i < keep {
                plan.stop_live(other, StopReason::RolledBack);
            } else if replacing && older_template && current_ready {
                plan.stop_live(other, StopReason::ReplacementReady);
            } else if replacing && older_template && input.order == UpdateOrder::StartFirst {
                // Start-first: it serves until its replacement is Ready.
            } else {
                plan.stop_live(other, StopReason::Superseded);
            }
        }
        slots.entry(slot_id).or_default().current = Some(current);
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
    let spec = &input.service.spec;
    // A new template is a fresh start: the slot gets a task of it whatever the old one's
    // ending (Swarm re-runs tasks on update), and its attempts count from zero.
    if !spec.is_up_to_date(&task.spec) {
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
        .filter(|t| spec.is_up_to_date(&t.spec))
        .collect();
    let policy = &spec.template.restart_policy;
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

impl Plan {
    /// Replaces the first `count` outdated slots of the survey: stop-first stages the new
    /// task (desired `ready`, started once the old one has stopped) and stops the old one;
    /// start-first creates the new task running and leaves the old one until the new one
    /// is Ready. Returns the slots it took.
    pub fn stage_updates(&mut self, count: usize) -> Vec<SlotId> {
        let count = count.min(self.survey.outdated.len());
        let batch: Vec<Outdated> = self.survey.outdated.drain(..count).collect();
        for outdated in &batch {
            let desired_state = match self.survey.order {
                UpdateOrder::StopFirst => TaskDesiredState::Ready,
                UpdateOrder::StartFirst => TaskDesiredState::Running,
            };
            self.create.push(NewTask {
                slot: outdated.slot.clone(),
                desired_state,
                reason: CreateReason::Update {
                    replaces: outdated.task.clone(),
                },
            });
            if self.survey.order == UpdateOrder::StopFirst {
                self.stop.push(Stop {
                    task: outdated.task.clone(),
                    reason: StopReason::Outdated,
                    live: true,
                });
            }
            self.survey.in_flight += 1;
        }
        batch.into_iter().map(|outdated| outdated.slot).collect()
    }
}

/// A replicated task on a node the placement constraints no longer allow: it waits for
/// the rollout to move it (a global task's slot is its node; see [`global_slots`]).
fn misplaced(input: &Input<'_>, task: &Task) -> bool {
    input.service.spec.mode == ServiceMode::Replicated
        && task
            .spec
            .node_name
            .as_deref()
            .and_then(|node| input.nodes.get(node))
            .is_some_and(|fit| !fit.matches)
}

/// When the task's `Ready` condition last became `True`, if it is `True`.
pub fn ready_since(task: &Task) -> Option<Time> {
    condition_true_since(task, CONDITION_READY)
}

/// When the task's `Started` condition last became `True` (its startup probe passed, or
/// it started running without one), if it is `True`.
pub fn started_since(task: &Task) -> Option<Time> {
    condition_true_since(task, CONDITION_STARTED)
}

fn condition_true_since(task: &Task, type_: &str) -> Option<Time> {
    let status = task.status.as_ref()?;
    if status.state != TaskState::Running {
        return None;
    }
    find_condition(&status.conditions, type_)
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| c.last_transition_time)
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
pub(super) mod tests;

#[cfg(test)]
#[path = "slots_update_tests.rs"]
pub(super) mod update_tests;
