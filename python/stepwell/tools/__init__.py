"""Tool executors that come with stepwell."""

from ..openresponses.transition import Agent
from .functions import FunctionTools, json_schema
from .http import HttpTool, HttpTools
from .toolbox import Toolbox

__all__ = ["Agent", "FunctionTools", "HttpTool", "HttpTools", "Toolbox", "json_schema"]
