"""The agent layer: one :class:`Agent` interface over SB3, ElegantRL and rule-based baselines.

See ``docs/agents.md``. Quick use::

    from agents import make_agent, load_agent
    agent = make_agent("ppo", n_steps=256).learn(env, total_timesteps=10_000, seed=0)
    action = agent.act(obs)            # deterministic
"""

from agents.base import (
    AGENT_REGISTRY,
    BUILTIN_AGENTS,
    Agent,
    AgentError,
    AgentLoadError,
    agent_class,
    agent_names,
    load_agent,
    make_agent,
    register_agent,
)

__all__ = [
    "AGENT_REGISTRY",
    "BUILTIN_AGENTS",
    "Agent",
    "AgentError",
    "AgentLoadError",
    "agent_class",
    "agent_names",
    "load_agent",
    "make_agent",
    "register_agent",
]
