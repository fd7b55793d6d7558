"""
What C{bluegreen demo} runs: the workshop's infrastructure on one machine,
and L{bluegreen.demo.meow}, the sample application it deploys.
"""
