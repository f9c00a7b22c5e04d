# The benchmark application for Puma: "/" and "/sleep?ms=N", each response
# carrying the serving process's PID in X-Pid.
run(lambda do |env|
  req = Rack::Request.new(env)
  headers = { "Content-Type" => "text/plain", "X-Pid" => Process.pid.to_s }
  if req.path == "/sleep"
    sleep(req.params["ms"].to_i / 1000.0)
    [200, headers, ["slept\n"]]
  else
    [200, headers, ["hello\n"]]
  end
end)
