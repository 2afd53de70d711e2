"""Create the seed schema: the 11 tables and 14 indexes of the seed data model, plus market_data_15m/1h.

The contract is /work/shared/seed/000_c52755d5c1b60a37.txt: every column, type, NOT NULL, default, primary
key, foreign key and index below is copied from it verbatim; tis_pipeline_tests/test_schema.py parses that
file and compares it with the live catalog. What the seed leaves unnamed is named here (STYLE.md §11):
``pk_<table>``, ``fk_<table>_<column>``, ``ck_<table>_<column>_range`` / ``_enum`` (the CHECK contract shared
with the quality registry) and ``ck_<table>_<rule>`` for the table-level bar checks.
market_data_15m and market_data_1h have exactly the columns, primary key and CHECKs of market_data_1m.

Plain SQL on purpose: a migration is frozen history and imports nothing from tis_pipeline.

Revision ID: 20261125_seed
Revises:
Create Date: 2026-11-25
"""

from alembic import op

revision = "20261125_seed"
down_revision = None
branch_labels = None
depends_on = None

MARKET_BAR_TABLES = ("market_data_1m", "market_data_15m", "market_data_1h")

# Creation order: every referenced table comes before the tables that reference it.
TABLES = (
    "modules",
    "module_performance",
    "trading_plans",
    "trading_plan_approvals",
    "dsi_evidence",
    "module_messages",
    "module_intelligence_sharing",
    "module_replications",
    "module_replication_triggers",
    *MARKET_BAR_TABLES,
    "anomaly_events",
)

MODULES = """
CREATE TABLE modules (
    module_id UUID CONSTRAINT pk_modules PRIMARY KEY DEFAULT gen_random_uuid(),
    module_type VARCHAR(50) NOT NULL, -- 'alpha_detector', 'decision_maker', 'trader'
    module_version VARCHAR(20) NOT NULL,
    parent_modules JSONB, -- Array of parent module IDs
    offspring_modules JSONB, -- Array of offspring module IDs
    generational_depth INTEGER DEFAULT 0,

    -- Module Intelligence
    learning_rate DECIMAL(3,2) DEFAULT 0.01,
    adaptation_threshold DECIMAL(3,2) DEFAULT 0.7,
    performance_history JSONB, -- Historical performance data
    learning_patterns JSONB, -- Learned patterns and behaviors
    innovation_score DECIMAL(3,2) DEFAULT 0.0,
    specialization_index DECIMAL(3,2) DEFAULT 0.0,

    -- Module Communication
    communication_latency_ms INTEGER DEFAULT 0,
    message_throughput_per_sec INTEGER DEFAULT 0,
    intelligence_sharing_rate DECIMAL(3,2) DEFAULT 0.0,
    collaboration_score DECIMAL(3,2) DEFAULT 0.0,
    peer_ratings JSONB, -- Ratings from other modules
    network_centrality DECIMAL(3,2) DEFAULT 0.0,

    -- Module Replication
    replication_readiness DECIMAL(3,2) DEFAULT 0.0,
    parent_performance JSONB, -- Performance of parent modules
    mutation_rate DECIMAL(3,2) DEFAULT 0.1,
    recombination_rate DECIMAL(3,2) DEFAULT 0.1,
    offspring_count INTEGER DEFAULT 0,

    -- Module Lifecycle
    lifecycle_stage VARCHAR(20) DEFAULT 'experimental',
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    last_updated TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    status VARCHAR(20) DEFAULT 'active',

    CONSTRAINT ck_modules_learning_rate_range CHECK (learning_rate BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_adaptation_threshold_range CHECK (adaptation_threshold BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_innovation_score_range CHECK (innovation_score BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_specialization_index_range CHECK (specialization_index BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_intelligence_sharing_rate_range CHECK (intelligence_sharing_rate BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_collaboration_score_range CHECK (collaboration_score BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_network_centrality_range CHECK (network_centrality BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_replication_readiness_range CHECK (replication_readiness BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_mutation_rate_range CHECK (mutation_rate BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_recombination_rate_range CHECK (recombination_rate BETWEEN 0 AND 1),
    CONSTRAINT ck_modules_lifecycle_stage_enum
        CHECK (lifecycle_stage IN ('experimental', 'active', 'deprecated', 'archived')),
    CONSTRAINT ck_modules_status_enum CHECK (status IN ('active', 'inactive', 'failed'))
)
"""

MODULE_PERFORMANCE = """
CREATE TABLE module_performance (
    performance_id UUID CONSTRAINT pk_module_performance PRIMARY KEY DEFAULT gen_random_uuid(),
    module_id UUID CONSTRAINT fk_module_performance_module_id REFERENCES modules(module_id),
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Performance Metrics
    performance_score DECIMAL(3,2) NOT NULL,
    consistency_score DECIMAL(3,2) NOT NULL,
    innovation_score DECIMAL(3,2) NOT NULL,
    specialization_score DECIMAL(3,2) NOT NULL,
    collaboration_score DECIMAL(3,2) NOT NULL,

    -- Trading Performance
    trading_plan_success_rate DECIMAL(3,2),
    execution_quality DECIMAL(3,2),
    risk_adjusted_returns DECIMAL(8,4),
    sharpe_ratio DECIMAL(8,4),
    max_drawdown DECIMAL(8,4),

    -- Module Intelligence
    learning_effectiveness DECIMAL(3,2),
    adaptation_speed DECIMAL(3,2),
    intelligence_sharing_effectiveness DECIMAL(3,2),

    -- Context
    market_regime VARCHAR(20),
    asset_class VARCHAR(20),
    time_horizon VARCHAR(10),

    CONSTRAINT ck_module_performance_performance_score_range CHECK (performance_score BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_consistency_score_range CHECK (consistency_score BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_innovation_score_range CHECK (innovation_score BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_specialization_score_range CHECK (specialization_score BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_collaboration_score_range CHECK (collaboration_score BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_trading_plan_success_rate_range
        CHECK (trading_plan_success_rate BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_execution_quality_range CHECK (execution_quality BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_learning_effectiveness_range CHECK (learning_effectiveness BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_adaptation_speed_range CHECK (adaptation_speed BETWEEN 0 AND 1),
    CONSTRAINT ck_module_performance_intelligence_sharing_effectiveness_range
        CHECK (intelligence_sharing_effectiveness BETWEEN 0 AND 1)
)
"""  # noqa: E501 - migration SQL is frozen: its text stays exactly as it was applied

TRADING_PLANS = """
CREATE TABLE trading_plans (
    plan_id UUID CONSTRAINT pk_trading_plans PRIMARY KEY DEFAULT gen_random_uuid(),
    module_id UUID CONSTRAINT fk_trading_plans_module_id REFERENCES modules(module_id),
    symbol VARCHAR(20) NOT NULL,
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Core Trading Plan
    signal_strength DECIMAL(3,2) NOT NULL,
    direction VARCHAR(10) NOT NULL,
    entry_conditions JSONB, -- Trigger conditions
    entry_price DECIMAL(20,8),
    position_size DECIMAL(5,2), -- percent of portfolio
    stop_loss DECIMAL(20,8),
    take_profit DECIMAL(20,8),
    time_horizon VARCHAR(10),
    risk_reward_ratio DECIMAL(5,2),
    confidence_score DECIMAL(3,2) NOT NULL,

    -- Intelligence Validation
    microstructure_evidence JSONB, -- DSI evidence
    regime_context JSONB, -- Market regime context
    module_intelligence JSONB, -- Module-specific intelligence
    execution_notes TEXT,
    valid_until TIMESTAMP WITH TIME ZONE,
    validation_status VARCHAR(20) DEFAULT 'pending',

    -- Risk Management
    risk_assessment JSONB, -- Risk analysis results
    portfolio_impact JSONB, -- Portfolio impact analysis

    -- Performance Tracking
    execution_status VARCHAR(20),
    executed_price DECIMAL(20,8),
    executed_quantity DECIMAL(20,8),
    execution_cost DECIMAL(20,8),
    slippage DECIMAL(8,4),
    pnl DECIMAL(20,8),
    performance_metrics JSONB, -- Detailed performance analysis
    attribution_analysis JSONB, -- Performance attribution analysis

    CONSTRAINT ck_trading_plans_signal_strength_range CHECK (signal_strength BETWEEN 0 AND 1),
    CONSTRAINT ck_trading_plans_confidence_score_range CHECK (confidence_score BETWEEN 0 AND 1),
    CONSTRAINT ck_trading_plans_position_size_range CHECK (position_size > 0 AND position_size <= 100),
    CONSTRAINT ck_trading_plans_risk_reward_ratio_range CHECK (risk_reward_ratio > 0 AND risk_reward_ratio <= 10),
    CONSTRAINT ck_trading_plans_direction_enum CHECK (direction IN ('long', 'short', 'neutral')),
    CONSTRAINT ck_trading_plans_time_horizon_enum CHECK (time_horizon IN ('1m', '5m', '15m', '1h', '4h', '1d')),
    CONSTRAINT ck_trading_plans_validation_status_enum
        CHECK (validation_status IN ('validated', 'pending', 'failed')),
    CONSTRAINT ck_trading_plans_execution_status_enum
        CHECK (execution_status IN ('executed', 'partial', 'failed', 'cancelled'))
)
"""  # noqa: E501 - migration SQL is frozen: its text stays exactly as it was applied

TRADING_PLAN_APPROVALS = """
CREATE TABLE trading_plan_approvals (
    approval_id UUID CONSTRAINT pk_trading_plan_approvals PRIMARY KEY DEFAULT gen_random_uuid(),
    plan_id UUID CONSTRAINT fk_trading_plan_approvals_plan_id REFERENCES trading_plans(plan_id),
    decision_maker_module_id UUID
        CONSTRAINT fk_trading_plan_approvals_decision_maker_module_id REFERENCES modules(module_id),
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Approval Decision
    approval_status VARCHAR(20) NOT NULL,
    approval_reason TEXT,
    modifications JSONB, -- Any modifications made

    -- Risk Assessment
    risk_assessment JSONB, -- Risk analysis results
    risk_controls JSONB, -- Applied risk controls
    portfolio_impact JSONB, -- Portfolio impact analysis

    -- Decision Intelligence
    decision_confidence DECIMAL(3,2),
    decision_factors JSONB, -- Factors that influenced decision
    alternative_plans JSONB, -- Alternative plans considered

    CONSTRAINT ck_trading_plan_approvals_decision_confidence_range CHECK (decision_confidence BETWEEN 0 AND 1),
    CONSTRAINT ck_trading_plan_approvals_approval_status_enum
        CHECK (approval_status IN ('approved', 'rejected', 'modified'))
)
"""  # noqa: E501 - migration SQL is frozen: its text stays exactly as it was applied

DSI_EVIDENCE = """
CREATE TABLE dsi_evidence (
    evidence_id UUID CONSTRAINT pk_dsi_evidence PRIMARY KEY DEFAULT gen_random_uuid(),
    plan_id UUID CONSTRAINT fk_dsi_evidence_plan_id REFERENCES trading_plans(plan_id),
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- MicroTape Evidence
    mx_evidence DECIMAL(3,2) NOT NULL,
    mx_confirm BOOLEAN NOT NULL,
    mx_expert_contributions JSONB, -- Individual expert outputs
    mx_microtape_hash VARCHAR(64), -- Hash of input MicroTape
    mx_processing_latency_ms INTEGER,
    mx_confidence_interval JSONB, -- Confidence interval for evidence score

    -- Micro-Expert Ecosystem
    mx_fsm_experts JSONB, -- Grammar/FSM expert outputs
    mx_classifier_experts JSONB, -- Tiny sequence classifier outputs
    mx_anomaly_experts JSONB, -- Anomaly scorer outputs
    mx_divergence_experts JSONB, -- Divergence verifier outputs
    mx_expert_weights JSONB, -- Learned weights for expert contributions
    mx_expert_survival_rates JSONB, -- Expert survival rates over time

    -- DSI Integration
    mx_evidence_boost DECIMAL(5,4), -- Evidence boost factor
    mx_confirm_rate DECIMAL(3,2), -- Confirmation rate across micro-experts
    mx_expert_survival_rate DECIMAL(3,2), -- Expert contribution survival rate
    mx_latency_p50 INTEGER, -- 50th percentile processing latency
    mx_latency_p95 INTEGER, -- 95th percentile processing latency
    mx_throughput_per_second INTEGER, -- Expert processing throughput

    CONSTRAINT ck_dsi_evidence_mx_evidence_range CHECK (mx_evidence BETWEEN 0 AND 1),
    CONSTRAINT ck_dsi_evidence_mx_confirm_rate_range CHECK (mx_confirm_rate BETWEEN 0 AND 1),
    CONSTRAINT ck_dsi_evidence_mx_expert_survival_rate_range CHECK (mx_expert_survival_rate BETWEEN 0 AND 1),
    CONSTRAINT ck_dsi_evidence_mx_processing_latency_ms_range
        CHECK (mx_processing_latency_ms > 0 AND mx_processing_latency_ms < 10000),
    CONSTRAINT ck_dsi_evidence_mx_throughput_per_second_range
        CHECK (mx_throughput_per_second > 0 AND mx_throughput_per_second < 10000)
)
"""

MODULE_MESSAGES = """
CREATE TABLE module_messages (
    message_id UUID CONSTRAINT pk_module_messages PRIMARY KEY DEFAULT gen_random_uuid(),
    sender_module_id UUID CONSTRAINT fk_module_messages_sender_module_id REFERENCES modules(module_id),
    receiver_module_id UUID CONSTRAINT fk_module_messages_receiver_module_id REFERENCES modules(module_id),
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Message Content
    message_type VARCHAR(50) NOT NULL,
    message_data JSONB NOT NULL, -- Message payload
    priority INTEGER DEFAULT 2, -- 1=high, 2=medium, 3=low
    ttl_seconds INTEGER DEFAULT 3600, -- Time to live

    -- Message Status
    status VARCHAR(20) DEFAULT 'pending',
    delivery_attempts INTEGER DEFAULT 0,
    last_delivery_attempt TIMESTAMP WITH TIME ZONE,
    error_message TEXT,

    CONSTRAINT ck_module_messages_priority_range CHECK (priority BETWEEN 1 AND 3),
    CONSTRAINT ck_module_messages_message_type_enum CHECK (
        message_type IN ('trading_plan', 'execution_feedback', 'intelligence_broadcast', 'replication_signal')
    ),
    CONSTRAINT ck_module_messages_status_enum CHECK (status IN ('pending', 'delivered', 'failed', 'expired'))
)
"""

MODULE_INTELLIGENCE_SHARING = """
CREATE TABLE module_intelligence_sharing (
    sharing_id UUID CONSTRAINT pk_module_intelligence_sharing PRIMARY KEY DEFAULT gen_random_uuid(),
    sender_module_id UUID
        CONSTRAINT fk_module_intelligence_sharing_sender_module_id REFERENCES modules(module_id),
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Intelligence Data
    intelligence_type VARCHAR(50) NOT NULL,
    intelligence_data JSONB NOT NULL, -- Module-specific intelligence

    -- Performance Metrics
    performance_score DECIMAL(3,2), -- Module performance score
    confidence_level DECIMAL(3,2), -- Confidence in intelligence
    last_updated TIMESTAMP WITH TIME ZONE,

    -- Sharing Context
    target_modules JSONB, -- Target module IDs (null = broadcast)
    sharing_scope VARCHAR(20) DEFAULT 'broadcast',
    sharing_priority INTEGER DEFAULT 3, -- 1=high, 2=medium, 3=low

    CONSTRAINT ck_module_intelligence_sharing_performance_score_range CHECK (performance_score BETWEEN 0 AND 1),
    CONSTRAINT ck_module_intelligence_sharing_sharing_priority_range CHECK (sharing_priority BETWEEN 1 AND 3),
    CONSTRAINT ck_module_intelligence_sharing_intelligence_type_enum
        CHECK (intelligence_type IN ('performance_update', 'learning_update', 'capability_update')),
    CONSTRAINT ck_module_intelligence_sharing_sharing_scope_enum
        CHECK (sharing_scope IN ('broadcast', 'targeted', 'private'))
)
"""  # noqa: E501 - migration SQL is frozen: its text stays exactly as it was applied

MODULE_REPLICATIONS = """
CREATE TABLE module_replications (
    replication_id UUID CONSTRAINT pk_module_replications PRIMARY KEY DEFAULT gen_random_uuid(),
    parent_module_id UUID CONSTRAINT fk_module_replications_parent_module_id REFERENCES modules(module_id),
    child_module_id UUID CONSTRAINT fk_module_replications_child_module_id REFERENCES modules(module_id),
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Replication Trigger
    trigger_type VARCHAR(50) NOT NULL,
    trigger_data JSONB, -- Trigger-specific data
    replication_reason TEXT,

    -- Replication Parameters
    target_capabilities JSONB, -- Required capabilities
    performance_threshold DECIMAL(3,2), -- Minimum performance threshold
    diversity_requirements JSONB, -- Diversity requirements

    -- Replication Process
    replication_status VARCHAR(20) DEFAULT 'initiated',
    creation_time_ms INTEGER, -- Time to create module
    validation_time_ms INTEGER, -- Time to validate module
    initialization_time_ms INTEGER, -- Time to initialize module

    -- Intelligence Inheritance
    inherited_intelligence JSONB, -- Intelligence inherited from parents
    mutation_applied JSONB, -- Mutations applied during replication
    recombination_applied JSONB, -- Recombination applied during replication

    CONSTRAINT ck_module_replications_trigger_type_enum CHECK (
        trigger_type IN ('performance_threshold', 'diversity_gap', 'regime_change', 'failure_recovery')
    ),
    CONSTRAINT ck_module_replications_replication_status_enum
        CHECK (replication_status IN ('initiated', 'in_progress', 'completed', 'failed'))
)
"""

MODULE_REPLICATION_TRIGGERS = """
CREATE TABLE module_replication_triggers (
    trigger_id UUID CONSTRAINT pk_module_replication_triggers PRIMARY KEY DEFAULT gen_random_uuid(),
    module_id UUID CONSTRAINT fk_module_replication_triggers_module_id REFERENCES modules(module_id),
    timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Trigger Details
    trigger_type VARCHAR(50) NOT NULL,
    trigger_data JSONB NOT NULL, -- Trigger-specific data
    trigger_priority INTEGER DEFAULT 2, -- 1=high, 2=medium, 3=low

    -- Trigger Status
    status VARCHAR(20) DEFAULT 'active',
    processed_at TIMESTAMP WITH TIME ZONE,
    replication_id UUID
        CONSTRAINT fk_module_replication_triggers_replication_id REFERENCES module_replications(replication_id),

    CONSTRAINT ck_module_replication_triggers_trigger_priority_range CHECK (trigger_priority BETWEEN 1 AND 3),
    CONSTRAINT ck_module_replication_triggers_trigger_type_enum CHECK (
        trigger_type IN ('performance_threshold', 'diversity_gap', 'regime_change', 'failure_recovery')
    ),
    CONSTRAINT ck_module_replication_triggers_status_enum
        CHECK (status IN ('active', 'processed', 'expired', 'cancelled'))
)
"""  # noqa: E501 - migration SQL is frozen: its text stays exactly as it was applied

# One template for the three bar tables, so that they cannot drift apart.
MARKET_BARS = """
CREATE TABLE {table} (
    -- Core OHLCV data
    symbol VARCHAR(20) NOT NULL,
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL,
    open DECIMAL(20,8) NOT NULL,
    high DECIMAL(20,8) NOT NULL,
    low DECIMAL(20,8) NOT NULL,
    close DECIMAL(20,8) NOT NULL,
    volume DECIMAL(20,8) NOT NULL,

    -- DSI Integration
    mx_evidence DECIMAL(3,2), -- DSI evidence score
    mx_confirm BOOLEAN, -- DSI confirmation flag
    mx_expert_contributions JSONB, -- DSI expert outputs

    -- Module Intelligence
    module_intelligence JSONB, -- Module-specific intelligence
    module_learning_updates JSONB, -- Learning updates from modules

    CONSTRAINT pk_{table} PRIMARY KEY (symbol, timestamp),
    CONSTRAINT ck_{table}_mx_evidence_range CHECK (mx_evidence BETWEEN 0 AND 1),
    CONSTRAINT ck_{table}_prices_positive CHECK (open > 0 AND high > 0 AND low > 0 AND close > 0),
    CONSTRAINT ck_{table}_volume_nonnegative CHECK (volume >= 0),
    CONSTRAINT ck_{table}_high_bounds CHECK (high >= open AND high >= close AND high >= low),
    CONSTRAINT ck_{table}_low_bounds CHECK (low <= open AND low <= close)
)
"""

ANOMALY_EVENTS = """
CREATE TABLE anomaly_events (
    -- Core event data
    event_id UUID CONSTRAINT pk_anomaly_events PRIMARY KEY DEFAULT gen_random_uuid(),
    symbol VARCHAR(20) NOT NULL,
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL,
    anomaly_type VARCHAR(50) NOT NULL,
    anomaly_score DECIMAL(5,4) NOT NULL,

    -- Trading Plan Integration
    trading_plan_id UUID CONSTRAINT fk_anomaly_events_trading_plan_id REFERENCES trading_plans(plan_id),
    plan_generation_module_id UUID
        CONSTRAINT fk_anomaly_events_plan_generation_module_id REFERENCES modules(module_id),

    -- Enhanced Signal Pack
    signal_pack JSONB NOT NULL, -- Enhanced signal pack with trading plans

    -- DSI Integration
    dsi_evidence_id UUID CONSTRAINT fk_anomaly_events_dsi_evidence_id REFERENCES dsi_evidence(evidence_id),
    microstructure_validation JSONB, -- DSI validation results

    -- Module Intelligence
    module_intelligence JSONB, -- Module intelligence used
    intelligence_confidence DECIMAL(3,2), -- Confidence in intelligence

    -- Performance Tracking
    plan_execution_status VARCHAR(20), -- Trading plan execution status
    plan_performance_metrics JSONB, -- Trading plan performance
    attribution_analysis JSONB -- Performance attribution
)
"""

INDEXES = """
CREATE INDEX idx_module_performance_module_id_timestamp ON module_performance(module_id, timestamp DESC);
CREATE INDEX idx_module_performance_score ON module_performance(performance_score DESC);
CREATE INDEX idx_trading_plans_module_id_timestamp ON trading_plans(module_id, timestamp DESC);
CREATE INDEX idx_trading_plans_symbol_timestamp ON trading_plans(symbol, timestamp DESC);
CREATE INDEX idx_trading_plans_confidence_score ON trading_plans(confidence_score DESC);
CREATE INDEX idx_dsi_evidence_plan_id ON dsi_evidence(plan_id);
CREATE INDEX idx_dsi_evidence_timestamp ON dsi_evidence(timestamp DESC);
CREATE INDEX idx_dsi_evidence_mx_evidence ON dsi_evidence(mx_evidence DESC);
CREATE INDEX idx_module_messages_sender_timestamp ON module_messages(sender_module_id, timestamp DESC);
CREATE INDEX idx_module_messages_receiver_timestamp ON module_messages(receiver_module_id, timestamp DESC);
CREATE INDEX idx_module_messages_type_status ON module_messages(message_type, status);
CREATE INDEX idx_module_replications_parent_timestamp ON module_replications(parent_module_id, timestamp DESC);
CREATE INDEX idx_module_replications_child_timestamp ON module_replications(child_module_id, timestamp DESC);
CREATE INDEX idx_module_replications_trigger_type ON module_replications(trigger_type);
"""  # noqa: E501 - the seed's lines verbatim, one statement per line (split on lines below)


def upgrade() -> None:
    for statement in (
        MODULES,
        MODULE_PERFORMANCE,
        TRADING_PLANS,
        TRADING_PLAN_APPROVALS,
        DSI_EVIDENCE,
        MODULE_MESSAGES,
        MODULE_INTELLIGENCE_SHARING,
        MODULE_REPLICATIONS,
        MODULE_REPLICATION_TRIGGERS,
        *(MARKET_BARS.format(table=table) for table in MARKET_BAR_TABLES),
        ANOMALY_EVENTS,
    ):
        op.execute(statement)
    for statement in INDEXES.strip().splitlines():
        op.execute(statement)


def downgrade() -> None:
    # Referencing tables first; the indexes and constraints go with their tables.
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE {table}")
